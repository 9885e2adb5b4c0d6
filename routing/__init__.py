"""Pure policy, no I/O: routes, opt-out keywords, send windows, sender rules, segment counts."""
