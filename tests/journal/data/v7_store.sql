BEGIN TRANSACTION;
CREATE TABLE pmsq_bindings (
    pattern TEXT NOT NULL,
    queue TEXT NOT NULL,
    PRIMARY KEY (pattern, queue)
) WITHOUT ROWID;
CREATE TABLE pmsq_counts (
        queue TEXT NOT NULL,
        tenant TEXT NOT NULL,
        ready INTEGER NOT NULL DEFAULT 0,
        delayed INTEGER NOT NULL DEFAULT 0,
        in_flight INTEGER NOT NULL DEFAULT 0,
        dead INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (queue, tenant)
    ) WITHOUT ROWID;
INSERT INTO "pmsq_counts" VALUES('mail','',1,0,1,1);
INSERT INTO "pmsq_counts" VALUES('mail','acme',0,0,0,0);
INSERT INTO "pmsq_counts" VALUES('sms','',1,0,0,0);
CREATE TABLE pmsq_dedup (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    dedup_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (queue, tenant, dedup_id)
) WITHOUT ROWID;
INSERT INTO "pmsq_dedup" VALUES('mail','acme','a-1','06HHGQ2G02FA6H3QRRNB91C4GW',1800000300.0);
CREATE TABLE pmsq_failures (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE pmsq_journal (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    message_id TEXT NOT NULL,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT,
    correlation_id TEXT,
    event TEXT NOT NULL,
    attempt INTEGER,
    worker TEXT,
    process TEXT,
    detail TEXT
);
INSERT INTO "pmsq_journal" VALUES(1,1800000000.0,'06HHGQ2G02FA6H3QRRNB91C4GW','mail','acme','guest:1','06HHGQ2G02FA6H3QRRNB91C4GW','put',NULL,NULL,'vm:22321','{"dedup_id":"a-1"}');
INSERT INTO "pmsq_journal" VALUES(2,1800000001.0,'06HHGQ2G02FA6H3QRRNB91C4GW','mail','acme','guest:1',NULL,'dedup_hit',NULL,NULL,'vm:22321','{"dedup_id":"a-1"}');
INSERT INTO "pmsq_journal" VALUES(3,1800000001.0,'06HHGQ2G02FA6H3QRRNB91C4GW','mail','acme','guest:1','06HHGQ2G02FA6H3QRRNB91C4GW','delivered',1,'w-old','vm:22321',NULL);
INSERT INTO "pmsq_journal" VALUES(4,1800000002.0,'06HHGQ2G02FA6H3QRRNB91C4GW','mail','acme','guest:1','06HHGQ2G02FA6H3QRRNB91C4GW','retried',1,NULL,'vm:22321','{"delay":0.0,"duration_ms":0.208}');
INSERT INTO "pmsq_journal" VALUES(5,1800000002.0,'06HHGQ2G02FA6H3QRRNB91C4GW','mail','acme','guest:1','06HHGQ2G02FA6H3QRRNB91C4GW','delivered',2,'w-old','vm:22321',NULL);
INSERT INTO "pmsq_journal" VALUES(6,1800000003.0,'06HHGQ2G02FA6H3QRRNB91C4GW','mail','acme','guest:1','06HHGQ2G02FA6H3QRRNB91C4GW','acked',2,NULL,'vm:22321','{"duration_ms":0.551}');
INSERT INTO "pmsq_journal" VALUES(7,1800000003.0,'06HHGQ2VQ171QA3SAH3BX7Q7T8','mail','','guest:2','06HHGQ2VQ171QA3SAH3BX7Q7T8','put',NULL,NULL,'vm:22321',NULL);
INSERT INTO "pmsq_journal" VALUES(8,1800000003.0,'06HHGQ2VQ2G9VVYFGV3ER9WKZW','mail','',NULL,'06HHGQ2VQ2G9VVYFGV3ER9WKZW','put',NULL,NULL,'vm:22321',NULL);
INSERT INTO "pmsq_journal" VALUES(9,1800000003.0,'06HHGQ2VQ13HYP7PYHZEB166HC','mail','','guest:2','06HHGQ2VQ13HYP7PYHZEB166HC','put',NULL,NULL,'vm:22321',NULL);
INSERT INTO "pmsq_journal" VALUES(10,1800000003.0,'06HHGQ2VQ171QA3SAH3BX7Q7T8','mail','','guest:2','06HHGQ2VQ171QA3SAH3BX7Q7T8','delivered',1,'w-old','vm:22321',NULL);
INSERT INTO "pmsq_journal" VALUES(11,1800000003.0,'06HHGQ2VQ2G9VVYFGV3ER9WKZW','mail','',NULL,'06HHGQ2VQ2G9VVYFGV3ER9WKZW','delivered',1,'w-old','vm:22321',NULL);
INSERT INTO "pmsq_journal" VALUES(12,1800000004.0,'06HHGQ2VQ171QA3SAH3BX7Q7T8','mail','','guest:2','06HHGQ2VQ171QA3SAH3BX7Q7T8','dead_lettered',1,NULL,'vm:22321','{"reason":"mailbox full","duration_ms":0.252,"fallback":"06HHGQ2ZM22K72R19M4GZXE18W"}');
INSERT INTO "pmsq_journal" VALUES(13,1800000004.0,'06HHGQ2ZM22K72R19M4GZXE18W','sms','','guest:2','06HHGQ2VQ171QA3SAH3BX7Q7T8','put',NULL,NULL,'vm:22321','{"causation_id":"06HHGQ2VQ171QA3SAH3BX7Q7T8","dead_letter_of":"06HHGQ2VQ171QA3SAH3BX7Q7T8"}');
CREATE TABLE pmsq_messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL,
    head INTEGER NOT NULL,
    line INTEGER NOT NULL,
    available_at REAL NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT,
    lease_expires REAL,
    enqueued_at REAL NOT NULL,
    format TEXT NOT NULL,
    payload BLOB NOT NULL,
    crc INTEGER NOT NULL,
    headers TEXT,
    dedup_id TEXT,
    topic TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    error_type TEXT,
    error TEXT,
    dead_reason TEXT,
    dead_at REAL
, expires_at REAL);
INSERT INTO "pmsq_messages" VALUES(1,'06HHGQ2VQ171QA3SAH3BX7Q7T8','mail','','guest:2',0,2,0,0,1800000003.0,1,NULL,NULL,1800000003.0,'json',X'226222',1176699741,NULL,NULL,NULL,'06HHGQ2VQ171QA3SAH3BX7Q7T8',NULL,NULL,NULL,'mailbox full',1800000004.0,NULL);
INSERT INTO "pmsq_messages" VALUES(2,'06HHGQ2VQ2G9VVYFGV3ER9WKZW','mail','',NULL,0,1,1,1,1800000003.0,1,'3f49fec656ca26e8',1800000033.0,1800000003.0,'json',X'226322',1597518364,NULL,NULL,NULL,'06HHGQ2VQ2G9VVYFGV3ER9WKZW',NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "pmsq_messages" VALUES(3,'06HHGQ2VQ13HYP7PYHZEB166HC','mail','','guest:2',0,0,1,1,1800000003.0,0,NULL,NULL,1800000003.0,'json',X'226422',276407515,NULL,NULL,NULL,'06HHGQ2VQ13HYP7PYHZEB166HC',NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "pmsq_messages" VALUES(4,'06HHGQ2ZM22K72R19M4GZXE18W','sms','','guest:2',0,0,1,1,1800000004.0,0,NULL,NULL,1800000004.0,'json',X'226222',1176699741,'{"pmsq.dead_letter":{"queue":"mail","message_id":"06HHGQ2VQ171QA3SAH3BX7Q7T8","reason":"mailbox full"}}',NULL,NULL,'06HHGQ2VQ171QA3SAH3BX7Q7T8','06HHGQ2VQ171QA3SAH3BX7Q7T8',NULL,NULL,NULL,NULL,NULL);
CREATE TABLE pmsq_meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO "pmsq_meta" VALUES('schema_version','7');
CREATE TABLE pmsq_metrics (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    slot INTEGER NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    retried INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    hist TEXT, put INTEGER NOT NULL DEFAULT 0, wait_hist TEXT,
    PRIMARY KEY (queue, tenant, slot)
) WITHOUT ROWID;
INSERT INTO "pmsq_metrics" VALUES('mail','',0,0,0,0,1,NULL,3,NULL);
INSERT INTO "pmsq_metrics" VALUES('mail','',179631961,0,0,0,1,'[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]',3,'[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]');
INSERT INTO "pmsq_metrics" VALUES('mail','acme',0,1,0,1,0,NULL,1,NULL);
INSERT INTO "pmsq_metrics" VALUES('mail','acme',179631961,1,0,1,0,'[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]',1,'[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]');
CREATE TABLE pmsq_pauses (
    queue TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    until REAL,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    circuit INTEGER NOT NULL DEFAULT 0,
    probe TEXT,
    PRIMARY KEY (queue, tenant, key)
) WITHOUT ROWID;
CREATE TABLE pmsq_queues (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    rr_tenant TEXT
) WITHOUT ROWID;
INSERT INTO "pmsq_queues" VALUES('mail','{"backoff": {"base": 1.0, "cap": 300.0, "factor": 2.0, "jitter": true}, "circuit": null, "dedup_window": 300.0, "fallback": "sms", "lease": 30.0, "max_attempts": 3, "max_depth": null, "name": "mail", "on_key_failure": "continue", "rate_limit": null, "tenant_quota": null}',NULL);
INSERT INTO "pmsq_queues" VALUES('sms','{"backoff": {"base": 1.0, "cap": 300.0, "factor": 2.0, "jitter": true}, "circuit": null, "dedup_window": 300.0, "fallback": null, "lease": 30.0, "max_attempts": 5, "max_depth": null, "name": "sms", "on_key_failure": "continue", "rate_limit": null, "tenant_quota": null}',NULL);
CREATE TABLE pmsq_rate (
    queue TEXT NOT NULL,
    scope TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE pmsq_schedules (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    queue TEXT NOT NULL,
    definition TEXT NOT NULL,
    payload BLOB NOT NULL,
    next_at REAL,
    last_at REAL,
    fired_at REAL,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE pmsq_workers (
    id TEXT PRIMARY KEY,
    queues TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX pmsq_ix_ready
    ON pmsq_messages (queue, tenant, priority DESC, seq) WHERE state = 0 AND head = 1;
CREATE INDEX pmsq_ix_scheduled
    ON pmsq_messages (queue, available_at) WHERE state = 3;
CREATE INDEX pmsq_ix_leases
    ON pmsq_messages (queue, lease_expires) WHERE state = 1;
CREATE INDEX pmsq_ix_keys
    ON pmsq_messages (queue, tenant, key, seq) WHERE line = 1 AND key IS NOT NULL;
CREATE INDEX pmsq_ix_dead
    ON pmsq_messages (queue, tenant, dead_at) WHERE state = 2;
CREATE INDEX pmsq_ix_dedup_expiry
    ON pmsq_dedup (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX pmsq_ix_rate ON pmsq_rate (queue, scope, ts);
CREATE INDEX pmsq_ix_journal_message ON pmsq_journal (message_id);
CREATE INDEX pmsq_ix_journal_key
    ON pmsq_journal (key, queue, tenant, at) WHERE event = 'put' AND key IS NOT NULL;
CREATE INDEX pmsq_ix_journal_correlation
    ON pmsq_journal (correlation_id) WHERE event = 'put' AND correlation_id != message_id;
CREATE INDEX pmsq_ix_schedules_due
    ON pmsq_schedules (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX pmsq_ix_failures ON pmsq_failures (queue, tenant, key, at);
CREATE INDEX pmsq_ix_workers_seen ON pmsq_workers (last_seen);
CREATE INDEX pmsq_ix_due
    ON pmsq_messages (queue, tenant, available_at) WHERE state IN (0, 3);
COMMIT;
