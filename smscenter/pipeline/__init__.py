"""The transport-neutral core: accounts, submit planning, dispatch, receipts, outbox, MO, opt-outs."""
