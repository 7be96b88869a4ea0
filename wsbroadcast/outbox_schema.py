"""The outbox's tables, trigger and advisory lock keys, created when missing.

docs/outbox.md shows the same DDL for schemas managed by migrations (a test checks).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from psycopg import AsyncConnection

logger = logging.getLogger("wsbroadcast.outbox")

CHANNEL = "wsb_outbox"
RELAY_LOCK = 0x7773_626F_7574_0001  # pg_advisory_lock key: the relay's, one holder at a time
SCHEMA_LOCK = 0x7773_626F_7574_0002  # serialises the DDL of instances starting at once
WAKE_LOCK = 0x7773_626F_7574_0003  # held by a relay waiting for rows: commits then notify it
DDL_SECONDS = 10.0  # creating the tables, at most

# Idempotent, and run under SCHEMA_LOCK: `IF NOT EXISTS` alone races (two instances
# starting at once can both create the type of one table). docs/outbox.md has the same DDL.
#
# The trigger runs at COMMIT (deferred) and notifies only while a relay waits for rows
# (it then holds WAKE_LOCK): NOTIFY makes committing transactions queue on one lock, so a
# busy relay, which reads again anyway, is not notified. The shared lock a commit takes
# instead is held until it is visible, and a relay takes WAKE_LOCK before its last read:
# no row is left waiting for the poll.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS wsb_outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type text NOT NULL,
    data jsonb NOT NULL,
    "timestamp" timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS wsb_outbox_dead (
    id bigint NOT NULL,
    type text,
    data jsonb,
    "timestamp" timestamptz,
    created_at timestamptz,
    error text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS wsb_outbox_relay (
    nonce text PRIMARY KEY,
    ids bigint[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION wsb_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared({WAKE_LOCK}) THEN
        PERFORM pg_notify('{CHANNEL}', '');
    END IF;
    RETURN NULL;
END $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'wsb_outbox_notify'
                   AND tgrelid = 'wsb_outbox'::regclass) THEN
        CREATE CONSTRAINT TRIGGER wsb_outbox_notify AFTER INSERT ON wsb_outbox
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wsb_outbox_notify();
    END IF;
END $$;
"""

# Everything the relay needs, so a migration-managed schema is left untouched.
PRESENT = """
SELECT to_regclass('wsb_outbox') IS NOT NULL
   AND to_regclass('wsb_outbox_dead') IS NOT NULL
   AND to_regclass('wsb_outbox_relay') IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_trigger
               WHERE tgrelid = to_regclass('wsb_outbox') AND tgname = 'wsb_outbox_notify')
"""


async def ensure_schema(conn: AsyncConnection[Any]) -> None:
    """Create the tables and the trigger when missing; safe when instances start at once."""
    with anyio.fail_after(DDL_SECONDS):
        row = await (await conn.execute(PRESENT)).fetchone()
        if row is not None and row[0]:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
            await conn.execute(SCHEMA)
    logger.info("outbox: created the wsb_outbox tables and trigger")
