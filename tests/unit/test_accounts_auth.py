"""``AccountRegistry.authenticate``: the same work and the same answer for an unknown account
as for a wrong password; the allow-list answer independent of the password."""

from __future__ import annotations

from protocol.constants import CommandId, CommandStatus as S
from smscenter.pipeline.accounts import AccountRegistry
from smscenter.config import settings_from_dict
from smscenter.runtime.passwords import dummy_hash, hash_password, verify_password

HASH = hash_password("right")


def registry(**account) -> AccountRegistry:
    settings = settings_from_dict(
        {"account": [{"system_id": "acme", "password": HASH, "category": "alert", **account}]}
    )
    return AccountRegistry(settings.accounts)


class Recorder:
    """Stands in for the bind guard's pool: records which hash each check ran against."""

    def __init__(self) -> None:
        self.hashes: list[str] = []

    async def __call__(self, fn, password, stored):
        self.hashes.append(stored)
        return fn(password, stored)


async def test_unknown_account_costs_a_check_against_the_dummy_hash_and_answers_like_a_wrong_password():
    reg, run = registry(), Recorder()
    unknown = await reg.authenticate(CommandId.BIND_TRANSMITTER, "nobody", "right", "192.0.2.1", run=run)
    wrong = await reg.authenticate(CommandId.BIND_TRANSMITTER, "acme", "wrong", "192.0.2.1", run=run)
    assert unknown == (None, S.ESME_RINVPASWD, "unknown_system_id")
    assert wrong == (None, S.ESME_RINVPASWD, "invalid_password")
    assert run.hashes == [dummy_hash(), HASH]
    assert dummy_hash() == dummy_hash() and dummy_hash().split("$")[1:4] == HASH.split("$")[1:4]
    assert not verify_password("", dummy_hash())


async def test_ip_outside_the_allow_list_gets_rbindfail_whatever_the_password():
    reg, run = registry(allowed_ips=["10.0.0.0/8"]), Recorder()
    for password in ("right", "wrong"):
        state, status, reason = await reg.authenticate(CommandId.BIND_TRANSMITTER, "acme", password, "192.0.2.1", run=run)
        assert (state, status, reason) == (None, S.ESME_RBINDFAIL, "ip_not_allowed")
    assert len(run.hashes) == 2  # the check ran both times: same work
    state, status, reason = await reg.authenticate(CommandId.BIND_TRANSMITTER, "acme", "right", "10.1.2.3", run=run)
    assert state is not None and status == S.ESME_ROK and reason is None


async def test_refusals_after_a_right_password_name_their_reason():
    reg, run = registry(bind_types=["receiver"], max_binds=1), Recorder()
    assert (await reg.authenticate(CommandId.BIND_TRANSMITTER, "acme", "right", "192.0.2.1", run=run))[1:] == (
        S.ESME_RBINDFAIL, "bind_type_not_allowed"
    )
    state, status, _ = await reg.authenticate(CommandId.BIND_RECEIVER, "acme", "right", "192.0.2.1", run=run)
    assert status == S.ESME_ROK
    assert reg.attach(state, object(), CommandId.BIND_RECEIVER) is not None
    assert (await reg.authenticate(CommandId.BIND_RECEIVER, "acme", "right", "192.0.2.1", run=run))[1:] == (
        S.ESME_RBINDFAIL, "max_binds"
    )
    assert reg.attach(state, object(), CommandId.BIND_RECEIVER) is None  # full meanwhile
