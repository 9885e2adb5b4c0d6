"""Process-wide plumbing below everything else: timers on an injectable clock, aggregated logging, token buckets."""
