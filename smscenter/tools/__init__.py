"""Operator tools: the demo upstream SMSC and the send client."""
