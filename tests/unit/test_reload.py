"""Live reload's parts without sockets: ``compare`` (what a reload applies, what needs a
restart), the registry taking new accounts, a token bucket's new rate, the retention job's
new time (virtual time), the queue in memory rerouted, and the policies a transaction takes
from a batch."""

from __future__ import annotations

import pytest

from smscenter.pipeline.accounts import AccountRegistry
from smscenter.config import settings_from_dict
from smscenter.pipeline.dispatch import Dispatcher, QueuedMessage
from smscenter.runtime.passwords import hash_password
from smscenter.runtime.ratelimit import TokenBucket
from smscenter.pipeline.receipts import AccountPolicies
from smscenter.pipeline.webhook_backlog import WebhookTargets
from smscenter.app.reload import compare
from smscenter.app.retention import RetentionJob
from smscenter.runtime.timers import FakeTimers
from storage.transaction import Transaction, Work


@pytest.fixture(scope="module")
def pw() -> str:
    return hash_password("secret1")


def settings(pw: str, **sections):
    data = {
        "storage": {"url": "sqlite:///var/smscenter.db", "keys": "var/keys"},
        "account": [{"system_id": "acme", "password": pw, "category": "alert"}],
        "connector": [{"name": "a", "host": "127.0.0.1", "port": 2776, "system_id": "gw", "password": "x"}],
        "route": [{"destinations": ["*"], "connectors": ["a"]}],
    }
    for key, value in sections.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    return settings_from_dict(data, base_dir="/tmp")


def test_compare_names_live_changes_without_values(pw) -> None:
    other = hash_password("other")
    old = settings(pw)
    new = settings(
        pw,
        account=[{"system_id": "acme", "password": other, "category": "alert", "throughput": 5},
                 {"system_id": "beta", "password": pw}],
        connector=[{"name": "a", "host": "127.0.0.1", "port": 2777, "system_id": "gw", "password": "x"},
                   {"name": "b", "host": "127.0.0.1", "port": 2778, "system_id": "gw", "password": "x"}],
        route=[{"destinations": ["+33"], "connectors": ["b", "a"]}, {"destinations": ["*"], "connectors": ["a"]}],
        windows={"rules": {"FR": "af2m-2026"}},
        retention={"message_details": "30d"},
        logging={"level": "debug"},
        optout=None,
    )
    changes, restart = compare(old, new)
    assert restart == []
    assert changes == [
        "logging.level: info -> debug",
        "retention.message_details: changed",
        "account beta: added",
        "account acme: password, throughput changed",
        "connector b: added",
        "connector a: port changed",
        "route[0]: destinations, connectors changed",
        "route[1]: added",
        "windows.rules: changed",
    ]
    assert other not in repr(changes) and pw not in repr(changes)


def test_compare_lists_what_needs_a_restart(pw) -> None:
    old = settings(pw)
    new = settings(
        pw,
        server={"listen": ["127.0.0.1:2780"], "window": 32},
        storage={"url": "sqlite:///var/other.db", "keys": "var/keys2"},
        http={"listen": "127.0.0.1:8081"},
        queue={"working_set": 500},
        optout={"short_code": "36180"},
        retention={"message_details": "30d"},  # live, but not applied alone
    )
    changes, restart = compare(old, new)
    assert restart == ["server.listen", "server.window", "storage.url", "storage.keys", "optout", "http.listen",
                       "queue.working_set"]
    assert changes == ["retention.message_details: changed"]
    assert compare(old, settings(pw)) == ([], [])


def test_registry_update_keeps_binds_and_tokens(pw) -> None:
    now = [100.0]
    first = settings(pw, account=[{"system_id": "acme", "password": pw, "throughput": 10, "category": "alert"},
                                  {"system_id": "beta", "password": pw}])
    registry = AccountRegistry(first.accounts, clock=lambda: now[0])
    acme = registry.get("acme")
    bind = registry.attach(acme, object(), 0x00000002)
    assert bind is not None
    second = settings(pw, account=[{"system_id": "acme", "password": pw, "throughput": 2, "sender_ids": ["ACME"],
                                    "category": "alert"},
                                   {"system_id": "gamma", "password": pw}])
    gone = registry.update(second.accounts)
    assert [s.system_id for s in gone] == ["beta"] and registry.get("beta") is None
    assert registry.get("acme") is acme and acme.binds == [bind]  # the same state, its bind kept
    assert acme.config.sender_ids == ("ACME",) and acme.bucket.rate == 2
    assert registry.get("gamma") is not None


def test_bucket_set_rate_keeps_earned_tokens_up_to_the_new_burst() -> None:
    bucket = TokenBucket(10, now=0.0)
    for _ in range(4):
        assert bucket.try_take(0.0)
    bucket.set_rate(100, now=0.0)  # 6 tokens left, burst now 100: kept, none given
    assert sum(bucket.try_take(0.0) for _ in range(10)) == 6
    bucket.set_rate(2, now=1.0)  # a second at 100/s earned 100, capped at the new burst
    assert sum(bucket.try_take(1.0) for _ in range(10)) == 2
    with pytest.raises(ValueError):
        bucket.set_rate(0, now=1.0)


async def test_retention_job_reschedule_moves_the_next_run() -> None:
    timers = FakeTimers(start=1_767_225_600.0)  # 2026-01-01 00:00 UTC

    class Purger:
        last_run_at = None

        async def last_run(self):
            return timers.now()  # ran just now: nothing overdue

        async def run(self):
            pass

        async def close(self):
            pass

    job = RetentionJob(Purger(), "03:30", timers)
    await job.start()
    await timers.settle()
    job.reschedule("01:00")
    await timers.advance(3600 - 1)
    assert job.runs == 0
    await timers.advance(1)  # 01:00: the new time, not 03:30
    assert job.runs == 1
    await timers.advance(86400 - 1)
    assert job.runs == 1
    await timers.advance(1)  # and daily from then on
    assert job.runs == 2
    await job.stop()


async def test_reroute_changes_the_messages_in_memory() -> None:
    dispatcher = Dispatcher({}, store=None, timers=FakeTimers(), clock=lambda: 0.0)
    late = QueuedMessage(1, "acme", b"h1", ("a",), 0.0, 10.0, [], dest="+33612345678", marketing=True)
    other = QueuedMessage(2, "beta", b"h2", ("a",), 0.0, 10.0, [], dest="+32470123456")
    for msg in (late, other):
        dispatcher._admit(msg)
    seen = []

    def route(msg):
        seen.append((msg.account, msg.marketing))
        return ("b",) if msg.dest.startswith("+33") else ("a",)

    assert dispatcher.reroute(route) == 1
    assert late.connectors == ("b",) and other.connectors == ("a",)
    assert sorted(seen) == [("acme", True), ("beta", False)]


def test_transaction_takes_policies_from_a_batch() -> None:
    policies = AccountPolicies({"acme": 30.0}, 10.0, {})
    transaction = Transaction(lambda done: None, per_part_receipts=policies.per_part_of, reconfigure=policies.update)
    webhooks = policies.webhooks  # what the webhook subscriber holds
    targets = {"acme": WebhookTargets(receipts=True)}
    transaction.apply(None, Work(reconfigure=({"acme": 5.0}, 20.0, {"acme": True}, targets)))  # nothing else: no SQL
    assert policies.retention_of("acme") == 5.0 and policies.retention_of("beta") == 20.0
    assert transaction.per_part_receipts("acme") is True
    assert webhooks == targets and policies.webhooks is webhooks  # updated in place


def test_compare_applies_webhook_keys_live(pw) -> None:
    """The webhook sender takes a reload's webhook keys (``WebhookSender.reconfigure``): a
    key changed, or an account added with one, is a live change, named by its key; a
    secret's value is never shown. ``[webhooks]`` still needs a restart."""
    secret = "s" * 20
    old = settings(pw)
    new = settings(
        pw,
        account=[{"system_id": "acme", "password": pw, "category": "alert",
                  "receipt_url": "https://hooks.example/r", "webhook_secret": secret},
                 {"system_id": "beta", "password": pw, "mo_url": "https://hooks.example/mo",
                  "webhook_secret": secret}],
    )
    changes, restart = compare(old, new)
    assert restart == []
    assert "account acme: receipt_url, webhook_secret changed" in changes, changes
    assert "account beta: mo_url, webhook_secret changed" in changes or "account beta: added" in changes, changes
    assert secret not in repr((changes, restart))
    assert compare(new, new) == ([], [])
    limits = settings(pw, webhooks={"max_in_flight": 8})
    assert compare(old, limits)[1] == ["webhooks.max_in_flight"]


def test_api_tokens_reload_live_and_api_needs_a_restart(pw) -> None:
    from smscenter.runtime.passwords import hash_token

    token = "t" * 40
    old = settings(pw)
    new = settings(pw, account=[{"system_id": "acme", "password": pw, "category": "alert",
                                 "api_tokens": [hash_token(token)]}])
    changes, restart = compare(old, new)
    assert (changes, restart) == (["account acme: api_tokens changed"], [])
    assert hash_token(token) not in repr(changes)
    registry = AccountRegistry(old.accounts, clock=lambda: 0.0)
    assert registry.by_token(token) is None
    registry.update(new.accounts)
    assert registry.by_token(token) is registry.get("acme")  # the next request uses it
    _, restart = compare(old, settings(pw, api={"listen": "127.0.0.1:8443", "max_recipients": 10}))
    assert restart == ["api.listen", "api.max_recipients"]
