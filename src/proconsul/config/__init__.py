"""Agent configuration: flags, config files, merging, validation, address templates.

Entry points: `agent_args.parse_agent_args` (the agent's command line),
`loader.load_config` / `loader.load_paths` (sources -> `schema.RuntimeConfig`,
raising `errors.ConfigError`), and `validate_command.run` (`proconsul validate`).
`flags` is the Go-style flag parser the agent and every CLI verb share.
"""
