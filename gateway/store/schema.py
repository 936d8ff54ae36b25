"""The SQLite schema as numbered migrations; each is applied once, in order, at start-up."""

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE customers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        webhook_uri TEXT NOT NULL DEFAULT '',
        webhook_method TEXT NOT NULL DEFAULT 'POST',
        webhook_secret TEXT NOT NULL,
        tm_create TEXT NOT NULL
    );
    CREATE TABLE numbers (
        number TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        carrier TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        tm_create TEXT NOT NULL
    );
    CREATE TABLE access_keys (
        key_hash TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        tm_create TEXT NOT NULL
    );
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        source TEXT NOT NULL,
        text TEXT NOT NULL,
        tm_create TEXT NOT NULL,
        tm_update TEXT NOT NULL,
        tm_delete TEXT NOT NULL
    );
    CREATE INDEX messages_page ON messages (customer_id, tm_delete, tm_create, id);
    CREATE TABLE targets (
        message_id TEXT NOT NULL REFERENCES messages (id),
        idx INTEGER NOT NULL,
        destination TEXT NOT NULL,
        status TEXT NOT NULL,
        parts INTEGER NOT NULL,
        tm_update TEXT NOT NULL,
        carrier TEXT NOT NULL DEFAULT '',
        carrier_status TEXT NOT NULL DEFAULT '',
        error_code TEXT NOT NULL DEFAULT '',
        carrier_message_id TEXT NOT NULL DEFAULT '',
        next_send_at TEXT,
        send_deadline_at TEXT,
        send_attempts INTEGER NOT NULL DEFAULT 0,
        lease_until TEXT,
        PRIMARY KEY (message_id, idx)
    );
    CREATE INDEX targets_send_due ON targets (next_send_at) WHERE next_send_at IS NOT NULL;
    CREATE TABLE carrier_refs (
        carrier TEXT NOT NULL,
        carrier_message_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        PRIMARY KEY (carrier, carrier_message_id)
    );
    CREATE TABLE processed_callbacks (
        carrier TEXT NOT NULL,
        key TEXT NOT NULL,
        tm_create TEXT NOT NULL,
        PRIMARY KEY (carrier, key)
    );
    CREATE TABLE pending_reports (
        carrier TEXT NOT NULL,
        carrier_message_id TEXT NOT NULL,
        status TEXT NOT NULL,
        carrier_status TEXT NOT NULL,
        error_code TEXT NOT NULL,
        parts INTEGER NOT NULL,
        tm_create TEXT NOT NULL
    );
    CREATE INDEX pending_reports_ref ON pending_reports (carrier, carrier_message_id);
    CREATE TABLE unrouted_inbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        carrier TEXT NOT NULL,
        carrier_message_id TEXT NOT NULL,
        source TEXT NOT NULL,
        destination TEXT NOT NULL,
        text TEXT NOT NULL,
        tm_create TEXT NOT NULL
    );
    CREATE TABLE idempotency_keys (
        customer_id TEXT NOT NULL,
        key TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        message_id TEXT NOT NULL,
        tm_create TEXT NOT NULL,
        PRIMARY KEY (customer_id, key)
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        customer_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        trigger TEXT NOT NULL DEFAULT 'scheduled',
        lease_until TEXT,
        tm_create TEXT NOT NULL,
        tm_update TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    CREATE INDEX outbox_message ON outbox (message_id, state, seq);
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        outbox_seq INTEGER NOT NULL REFERENCES outbox (seq),
        attempt_number INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        tm_attempt TEXT NOT NULL,
        url TEXT NOT NULL,
        status_code INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        error TEXT NOT NULL,
        response_excerpt TEXT NOT NULL
    );
    CREATE INDEX webhook_attempts_event ON webhook_attempts (outbox_seq)
    """,
    """
    ALTER TABLE targets ADD COLUMN dlr_deadline_at TEXT;
    CREATE INDEX targets_dlr_due ON targets (dlr_deadline_at) WHERE dlr_deadline_at IS NOT NULL;
    CREATE TABLE target_parts (
        carrier TEXT NOT NULL,
        carrier_message_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (carrier, carrier_message_id)
    );
    CREATE INDEX target_parts_target ON target_parts (message_id, idx);
    CREATE TABLE inbound_parts (
        carrier TEXT NOT NULL,
        source TEXT NOT NULL,
        destination TEXT NOT NULL,
        concat_ref TEXT NOT NULL,
        part INTEGER NOT NULL,
        total INTEGER NOT NULL,
        text TEXT NOT NULL,
        carrier_message_id TEXT NOT NULL,
        tm_create TEXT NOT NULL,
        PRIMARY KEY (carrier, source, destination, concat_ref, part)
    );
    CREATE INDEX inbound_parts_age ON inbound_parts (tm_create)
    """,
    """
    ALTER TABLE webhook_attempts ADD COLUMN error_class TEXT NOT NULL DEFAULT '';
    ALTER TABLE customers ADD COLUMN webhook_disabled_at TEXT NOT NULL DEFAULT '';
    ALTER TABLE customers ADD COLUMN webhook_disabled_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE customers ADD COLUMN webhook_failing_since TEXT NOT NULL DEFAULT '';
    ALTER TABLE customers ADD COLUMN previous_webhook_secret TEXT NOT NULL DEFAULT '';
    ALTER TABLE customers ADD COLUMN previous_secret_expires_at TEXT NOT NULL DEFAULT '';
    CREATE INDEX outbox_customer ON outbox (customer_id, tm_create);
    CREATE INDEX outbox_failed ON outbox (state, tm_update) WHERE state = 'failed'
    """,
    """
    ALTER TABLE outbox ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0
    """,
    # Claims go endpoint by endpoint (one endpoint's backlog never slows another's claims),
    # start-up finds the leases of a crashed process without reading every row, and retention
    # finds what is old enough to delete.
    """
    CREATE INDEX outbox_customer_due ON outbox (state, customer_id, next_attempt_at);
    DROP INDEX outbox_due;
    CREATE INDEX outbox_leased ON outbox (lease_until) WHERE lease_until IS NOT NULL;
    CREATE INDEX targets_leased ON targets (lease_until) WHERE lease_until IS NOT NULL;
    CREATE INDEX outbox_delivered ON outbox (tm_update) WHERE state = 'delivered';
    CREATE INDEX processed_callbacks_age ON processed_callbacks (tm_create)
    """,
    # The last callback of the inbox (gateway/store/inbox.py) applied here: moved in the
    # transaction that applies callbacks, so each is applied once, crash or not.
    """
    CREATE TABLE inbox_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        applied_through INTEGER NOT NULL
    );
    INSERT INTO inbox_cursor (id, applied_through) VALUES (1, 0);
    CREATE TABLE failed_callbacks (
        inbox_id INTEGER PRIMARY KEY,
        carrier TEXT NOT NULL,
        received_at TEXT NOT NULL,
        callback BLOB NOT NULL,
        error TEXT NOT NULL
    )
    """,
)
