"""The process: daemon wiring, background jobs, systemd notify, logging set-up, metrics."""
