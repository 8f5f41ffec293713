"""`proconsul demo service`: a small fake service for labs and tests."""
