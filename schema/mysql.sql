-- healthmgr database schema for MariaDB/MySQL, revision 0003.
-- Generated from healthmgr/db/models.py; do not edit. Regenerate with:
--   healthmgr db ddl --dialect mysql > schema/mysql.sql
-- A database created from this file (not by `healthmgr db upgrade`) must
-- then be stamped: healthmgr db stamp 0003

CREATE TABLE amphora_health (
    amphora_id VARCHAR(36) NOT NULL,
    last_update DATETIME(6) NOT NULL,
    busy BOOL NOT NULL,
    CONSTRAINT pk_amphora_health PRIMARY KEY (amphora_id)
);

CREATE TABLE failover_request (
    id INTEGER NOT NULL AUTO_INCREMENT,
    amphora_id VARCHAR(36) NOT NULL,
    load_balancer_id VARCHAR(36),
    reason VARCHAR(255) NOT NULL,
    requested_by VARCHAR(255) NOT NULL,
    requested_at DATETIME(6) NOT NULL,
    state VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    updated_at DATETIME(6),
    owner VARCHAR(255),
    lease_expires_at DATETIME(6),
    CONSTRAINT pk_failover_request PRIMARY KEY (id),
    CONSTRAINT ck_failover_request_state CHECK (state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'ABANDONED'))
);

CREATE INDEX ix_failover_request_amphora_id ON failover_request (amphora_id);

CREATE INDEX ix_failover_request_requested_at ON failover_request (requested_at);

CREATE INDEX ix_failover_request_state_requested_at ON failover_request (state, requested_at);

CREATE TABLE healthmgr_amphora (
    amphora_id VARCHAR(36) NOT NULL,
    report_order BIGINT NOT NULL,
    report_digest BIGINT NOT NULL,
    observed_by VARCHAR(255) NOT NULL,
    observed_at DATETIME(6) NOT NULL,
    healthy BOOL NOT NULL,
    native_since DATETIME(6),
    CONSTRAINT pk_healthmgr_amphora PRIMARY KEY (amphora_id)
);

CREATE TABLE healthmgr_manager (
    manager_id VARCHAR(255) NOT NULL,
    hostname VARCHAR(255),
    pid INTEGER,
    version VARCHAR(64),
    started_at DATETIME(6) NOT NULL,
    heartbeat_at DATETIME(6) NOT NULL,
    impaired BOOL NOT NULL,
    impaired_reason VARCHAR(255),
    healthy_since DATETIME(6),
    last_flush_at DATETIME(6),
    last_check_at DATETIME(6),
    last_claim_at DATETIME(6),
    breaker_open BOOL NOT NULL,
    breaker_reason VARCHAR(255),
    stopped_at DATETIME(6),
    CONSTRAINT pk_healthmgr_manager PRIMARY KEY (manager_id)
);

CREATE TABLE listener_statistics (
    listener_id VARCHAR(36) NOT NULL,
    amphora_id VARCHAR(36) NOT NULL,
    bytes_in BIGINT NOT NULL,
    bytes_out BIGINT NOT NULL,
    active_connections BIGINT NOT NULL,
    total_connections BIGINT NOT NULL,
    request_errors BIGINT NOT NULL,
    counters_epoch BIGINT,
    last_seq BIGINT NOT NULL,
    last_bytes_in BIGINT NOT NULL,
    last_bytes_out BIGINT NOT NULL,
    last_total_connections BIGINT NOT NULL,
    last_request_errors BIGINT NOT NULL,
    updated_at DATETIME(6),
    CONSTRAINT pk_listener_statistics PRIMARY KEY (listener_id, amphora_id)
);

CREATE TABLE load_balancer (
    id VARCHAR(36) NOT NULL,
    project_id VARCHAR(36),
    name VARCHAR(255),
    description VARCHAR(255),
    provisioning_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    operating_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    enabled BOOL NOT NULL,
    topology VARCHAR(36) COLLATE utf8mb4_bin,
    provider VARCHAR(64),
    created_at DATETIME(6),
    updated_at DATETIME(6),
    CONSTRAINT pk_load_balancer PRIMARY KEY (id),
    CONSTRAINT ck_load_balancer_provisioning_status CHECK (provisioning_status IN ('ACTIVE', 'PENDING_CREATE', 'PENDING_UPDATE', 'PENDING_DELETE', 'DELETED', 'ERROR')),
    CONSTRAINT ck_load_balancer_operating_status CHECK (operating_status IN ('ONLINE', 'DEGRADED', 'ERROR', 'NO_MONITOR', 'OFFLINE', 'DRAINING')),
    CONSTRAINT ck_load_balancer_topology CHECK (topology IS NULL OR topology IN ('SINGLE', 'ACTIVE_STANDBY'))
);

CREATE TABLE amphora (
    id VARCHAR(36) NOT NULL,
    compute_id VARCHAR(36),
    status VARCHAR(36) COLLATE utf8mb4_bin NOT NULL,
    load_balancer_id VARCHAR(36),
    lb_network_ip VARCHAR(64),
    vrrp_ip VARCHAR(64),
    ha_ip VARCHAR(64),
    `role` VARCHAR(36) COLLATE utf8mb4_bin,
    created_at DATETIME(6),
    updated_at DATETIME(6),
    CONSTRAINT pk_amphora PRIMARY KEY (id),
    CONSTRAINT ck_amphora_status CHECK (status IN ('BOOTING', 'ALLOCATED', 'READY', 'ERROR', 'DELETED', 'PENDING_DELETE', 'FAILOVER_STOPPED')),
    CONSTRAINT ck_amphora_role CHECK (role IS NULL OR role IN ('STANDALONE', 'MASTER', 'BACKUP')),
    CONSTRAINT fk_amphora_load_balancer_id_load_balancer FOREIGN KEY(load_balancer_id) REFERENCES load_balancer (id)
);

CREATE INDEX ix_amphora_load_balancer_id ON amphora (load_balancer_id);

CREATE TABLE pool (
    id VARCHAR(36) NOT NULL,
    project_id VARCHAR(36),
    name VARCHAR(255),
    load_balancer_id VARCHAR(36),
    protocol VARCHAR(16) NOT NULL,
    lb_algorithm VARCHAR(255) NOT NULL,
    enabled BOOL NOT NULL,
    provisioning_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    operating_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    created_at DATETIME(6),
    updated_at DATETIME(6),
    CONSTRAINT pk_pool PRIMARY KEY (id),
    CONSTRAINT ck_pool_provisioning_status CHECK (provisioning_status IN ('ACTIVE', 'PENDING_CREATE', 'PENDING_UPDATE', 'PENDING_DELETE', 'DELETED', 'ERROR')),
    CONSTRAINT ck_pool_operating_status CHECK (operating_status IN ('ONLINE', 'DEGRADED', 'ERROR', 'NO_MONITOR', 'OFFLINE', 'DRAINING')),
    CONSTRAINT fk_pool_load_balancer_id_load_balancer FOREIGN KEY(load_balancer_id) REFERENCES load_balancer (id)
);

CREATE INDEX ix_pool_load_balancer_id ON pool (load_balancer_id);

CREATE TABLE health_monitor (
    id VARCHAR(36) NOT NULL,
    project_id VARCHAR(36),
    name VARCHAR(255),
    pool_id VARCHAR(36) NOT NULL,
    type VARCHAR(36) NOT NULL,
    delay INTEGER NOT NULL,
    timeout INTEGER NOT NULL,
    rise_threshold INTEGER NOT NULL,
    fall_threshold INTEGER NOT NULL,
    http_method VARCHAR(16),
    url_path VARCHAR(2048),
    expected_codes VARCHAR(64),
    enabled BOOL NOT NULL,
    provisioning_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    operating_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    created_at DATETIME(6),
    updated_at DATETIME(6),
    CONSTRAINT pk_health_monitor PRIMARY KEY (id),
    CONSTRAINT ck_health_monitor_provisioning_status CHECK (provisioning_status IN ('ACTIVE', 'PENDING_CREATE', 'PENDING_UPDATE', 'PENDING_DELETE', 'DELETED', 'ERROR')),
    CONSTRAINT ck_health_monitor_operating_status CHECK (operating_status IN ('ONLINE', 'DEGRADED', 'ERROR', 'NO_MONITOR', 'OFFLINE', 'DRAINING')),
    CONSTRAINT uq_health_monitor_pool_id UNIQUE (pool_id),
    CONSTRAINT fk_health_monitor_pool_id_pool FOREIGN KEY(pool_id) REFERENCES pool (id)
);

CREATE TABLE listener (
    id VARCHAR(36) NOT NULL,
    project_id VARCHAR(36),
    name VARCHAR(255),
    load_balancer_id VARCHAR(36),
    protocol VARCHAR(16) NOT NULL,
    protocol_port INTEGER NOT NULL,
    connection_limit INTEGER,
    default_pool_id VARCHAR(36),
    enabled BOOL NOT NULL,
    provisioning_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    operating_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    created_at DATETIME(6),
    updated_at DATETIME(6),
    CONSTRAINT pk_listener PRIMARY KEY (id),
    CONSTRAINT ck_listener_provisioning_status CHECK (provisioning_status IN ('ACTIVE', 'PENDING_CREATE', 'PENDING_UPDATE', 'PENDING_DELETE', 'DELETED', 'ERROR')),
    CONSTRAINT ck_listener_operating_status CHECK (operating_status IN ('ONLINE', 'DEGRADED', 'ERROR', 'NO_MONITOR', 'OFFLINE', 'DRAINING')),
    CONSTRAINT fk_listener_load_balancer_id_load_balancer FOREIGN KEY(load_balancer_id) REFERENCES load_balancer (id),
    CONSTRAINT fk_listener_default_pool_id_pool FOREIGN KEY(default_pool_id) REFERENCES pool (id)
);

CREATE INDEX ix_listener_load_balancer_id ON listener (load_balancer_id);

CREATE TABLE `member` (
    id VARCHAR(36) NOT NULL,
    project_id VARCHAR(36),
    name VARCHAR(255),
    pool_id VARCHAR(36) NOT NULL,
    subnet_id VARCHAR(36),
    ip_address VARCHAR(64) NOT NULL,
    protocol_port INTEGER NOT NULL,
    weight INTEGER,
    backup BOOL NOT NULL,
    enabled BOOL NOT NULL,
    provisioning_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    operating_status VARCHAR(16) COLLATE utf8mb4_bin NOT NULL,
    created_at DATETIME(6),
    updated_at DATETIME(6),
    CONSTRAINT pk_member PRIMARY KEY (id),
    CONSTRAINT ck_member_provisioning_status CHECK (provisioning_status IN ('ACTIVE', 'PENDING_CREATE', 'PENDING_UPDATE', 'PENDING_DELETE', 'DELETED', 'ERROR')),
    CONSTRAINT ck_member_operating_status CHECK (operating_status IN ('ONLINE', 'DEGRADED', 'ERROR', 'NO_MONITOR', 'OFFLINE', 'DRAINING')),
    CONSTRAINT fk_member_pool_id_pool FOREIGN KEY(pool_id) REFERENCES pool (id)
);

CREATE INDEX ix_member_pool_id ON `member` (pool_id);
