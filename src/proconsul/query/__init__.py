"""Prepared queries, the pure core: checking a definition, finding the query a
name or ID asks for (templates included), rendering a template, and choosing
the instances an execution answers with (DESIGN.md, "Prepared queries")."""
