"""`vitals demo`: the whole pipeline on local processes with simulated devices.

`run` (the command), `stack` (the processes it starts), `fleet` (providers,
devices and their readings), `publisher` (MQTT and webhook senders),
`simulator` (data points), `report` (counts, DuckDB query, chart), `extra`
(whether the optional `demo` dependencies are installed). Only the CLI
imports this package; it may import anything but the CLI.
"""
