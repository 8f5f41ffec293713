"""Health checks: status rules (`status`, pure), definition rules (`kinds`, pure),
single probes (`probes`) and the monitors the agent runs (`runner`).

Import `proconsul.checks.runner` for `make_monitor` / `CheckRunnerSet`; this
package itself imports nothing so the pure parts stay cheap to load.
"""
