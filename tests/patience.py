"""How long a test waits for something that must happen.

A wait returns as soon as what it waits for is there, so a generous bound costs a passing test
nothing; it only decides how long a broken one takes to fail. On a loaded CI machine (the suite
is run under four busy loops) a few seconds is not enough for a daemon to start, bind, commit
and answer, and a tight bound turns "slow" into "red". Checks that something does *not*
happen use a barrier (an enquire_link round trip) or a short settle instead, never this.
"""

PATIENCE = 30.0
