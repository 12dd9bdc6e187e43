"""The stored tree: extended when checkpoints are signed, roots and proofs from the stored
nodes agree with the tree computed from the events, and a checkpoint inconsistent with the
last one is never signed."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import merkle, store
from app.audit.chain import signature_valid
from app.audit.tree import TreeStore
from app.models import AuditEvent, AuditTreeNode
from app.settings import Settings
from tests.audit.conftest import add_events, tamper


async def _leaves(session: AsyncSession) -> list[bytes]:
    hashes = (await session.execute(select(AuditEvent.hash).order_by(AuditEvent.seq))).scalars()
    return [merkle.leaf_hash(bytes.fromhex(h)) for h in hashes]


async def test_checkpoints_extend_the_tree_and_proofs_verify(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 100})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 1100, per_transaction=50)
    key = audit.AuditConfig.from_settings(settings).signer.public_key
    async with sessionmaker() as session:
        signed = await store.checkpoints(session)
        leaves = await _leaves(session)
        rows = await session.execute(select(AuditTreeNode.level, AuditTreeNode.idx))
        nodes = {(int(row.level), int(row.idx)) for row in rows}
        assert [c.seq for c in signed] == list(range(100, 1101, 100))
        # Four complete blocks of 256, and the nodes above them they complete.
        assert nodes == {(8, 0), (8, 1), (8, 2), (8, 3), (9, 0), (9, 1), (10, 0)}
        for checkpoint in signed:
            assert signature_valid(checkpoint, key)
            assert checkpoint.root_bytes == merkle.root_of(leaves[: checkpoint.seq])

        def proofs(sync: object) -> None:
            tree = TreeStore(sync)  # type: ignore[arg-type]
            for checkpoint in signed:
                size, root = checkpoint.seq, checkpoint.root_bytes
                assert root is not None
                assert tree.root(size) == root
                for index in (0, 1, 255, 256, 511, 767, size - 1):
                    if index < size:
                        proof = tree.inclusion_proof(index, size)
                        assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
                for old in signed:
                    if old.seq <= size:
                        proof = tree.consistency_proof(old.seq, size)
                        assert old.root_bytes is not None
                        assert merkle.verify_consistency(old.seq, size, old.root_bytes, root, proof)

        await session.run_sync(proofs)


async def test_no_checkpoint_is_signed_that_contradicts_the_last_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 20, per_transaction=5)
    # The owner rewrites an event under the checkpoint at 20 (its hash column too).
    await tamper(
        sessionmaker,
        settings,
        "UPDATE audit_events SET hash = (SELECT hash FROM audit_events WHERE seq = 14) "
        "WHERE seq = 15",
    )
    await add_events(sessionmaker, 10, per_transaction=5)
    async with sessionmaker() as session:
        seqs = [c.seq for c in await store.checkpoints(session)]
        assert (await session.execute(select(func.count()).select_from(AuditEvent))).scalar() == 30
    assert seqs == [10, 20]  # 30 was refused: its tree does not extend the one signed at 20
