-- gse-control schema, version 1. Every replica runs the same statements; the migration runner
-- serialises them with an advisory lock.

-- Fleets are the fleet ids agents announce; what the API sets on them is kept here.
CREATE TABLE fleets (
    fleet_id text PRIMARY KEY,
    -- The region its hosts announce (the last to connect wins).
    region text NOT NULL DEFAULT 'local',
    name text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    -- Tencent's RuntimeConfiguration JSON last set by UpdateRuntimeConfiguration, and how many
    -- times it was set (an instance that applied an older revision gets it when it connects).
    runtime_configuration text,
    runtime_revision bigint NOT NULL DEFAULT 0,
    -- The build roll-out asked for (UpdateFleetAttributes' extension), its revision and state.
    build_location text,
    build_sha256 text,
    build_revision bigint NOT NULL DEFAULT 0,
    rollout_state text NOT NULL DEFAULT 'NONE',
    rollout_message text NOT NULL DEFAULT '',
    -- The replica driving the roll-out (another takes it over when that one stops).
    rollout_owner text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per game host (agent instance).
CREATE TABLE instances (
    instance_id text PRIMARY KEY,
    fleet_id text NOT NULL REFERENCES fleets,
    region text NOT NULL DEFAULT 'local',
    public_ip text NOT NULL DEFAULT '',
    dns_name text NOT NULL DEFAULT '',
    agent_version text NOT NULL DEFAULT '',
    -- The replica holding its relay stream, and that stream's id; NULL when none does.
    replica text,
    stream text,
    connected boolean NOT NULL DEFAULT false,
    -- No stream for instance-lost-after: no new sessions until it comes back.
    lost boolean NOT NULL DEFAULT false,
    last_seen timestamptz NOT NULL DEFAULT now(),
    -- The outbox epoch and the highest event sequence stored in it.
    epoch bigint NOT NULL DEFAULT 0,
    acked bigint NOT NULL DEFAULT 0,
    -- Healthy idle processes by the last snapshot, less sessions created since; sessions
    -- being created there now.
    idle integer NOT NULL DEFAULT 0,
    in_flight integer NOT NULL DEFAULT 0,
    -- When a create was last counted in flight (a count left by a replica that died mid-call
    -- is cleared once no create could still be under way).
    in_flight_at timestamptz NOT NULL DEFAULT now(),
    processes integer NOT NULL DEFAULT 0,
    -- The sessions its busy processes host by the last snapshot, plus those created since.
    busy text[] NOT NULL DEFAULT '{}',
    -- The latest InstanceStatus counters, as the agent sent them.
    status jsonb NOT NULL DEFAULT '{}',
    reserved boolean NOT NULL DEFAULT false,
    draining boolean NOT NULL DEFAULT false,
    weight integer NOT NULL DEFAULT 0,
    runtime_revision bigint NOT NULL DEFAULT 0,
    build_revision bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_fleet ON instances (fleet_id);
-- The hosts a session may go to, in the order they are chosen (see `pick`): the choice reads
-- the first entry instead of sorting the fleet.
CREATE INDEX instances_choice ON instances
    (fleet_id, weight DESC, (in_flight > 0), (idle - in_flight), instance_id)
    WHERE connected AND NOT lost AND NOT reserved AND NOT draining AND idle > in_flight;

-- Every event every agent relayed, stored before it is acknowledged.
CREATE TABLE events (
    instance_id text NOT NULL,
    epoch bigint NOT NULL,
    sequence bigint NOT NULL,
    id bigserial NOT NULL,
    fleet_id text NOT NULL,
    time_ms bigint NOT NULL,
    code text NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (instance_id, epoch, sequence)
);
CREATE INDEX events_fleet ON events (fleet_id, id);

-- Game server sessions as the hosts report them (Tencent's GameServerSession JSON).
CREATE TABLE sessions (
    gss_id text PRIMARY KEY,
    fleet_id text NOT NULL,
    instance_id text NOT NULL,
    status text NOT NULL,
    created_ms bigint NOT NULL,
    body jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_fleet ON sessions (fleet_id, status, created_ms);
CREATE INDEX sessions_instance ON sessions (instance_id);

-- Player sessions (Tencent's PlayerSession JSON).
CREATE TABLE players (
    player_session_id text PRIMARY KEY,
    gss_id text NOT NULL,
    player_id text NOT NULL,
    status text NOT NULL,
    created_ms bigint NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX players_gss ON players (gss_id);
CREATE INDEX players_player ON players (player_id);

-- IdempotencyToken of CreateGameServerSession, fleet-wide and across replicas: the first
-- request claims the token; a retry waits for, or takes over, that request.
CREATE TABLE idempotency (
    token text PRIMARY KEY,
    fleet_id text NOT NULL,
    instance_id text,
    command bytea,
    gss_id text,
    claimed_by text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- Commands for an agent whose stream another replica holds; the result comes back here.
CREATE TABLE commands (
    id text PRIMARY KEY,
    instance_id text NOT NULL,
    body bytea NOT NULL,
    origin text NOT NULL,
    result bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Live replicas.
CREATE TABLE replicas (
    replica text PRIMARY KEY,
    api_addr text NOT NULL,
    relay_addr text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE aliases (
    alias_id text PRIMARY KEY,
    body jsonb NOT NULL
);

CREATE TABLE queues (
    name text PRIMARY KEY,
    body jsonb NOT NULL,
    started bigint NOT NULL DEFAULT 0,
    fulfilled bigint NOT NULL DEFAULT 0,
    timed_out bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    first_choice_not_viable bigint NOT NULL DEFAULT 0,
    wait_ms_total bigint NOT NULL DEFAULT 0
);

CREATE TABLE placements (
    placement_id text PRIMARY KEY,
    queue_name text NOT NULL,
    status text NOT NULL,
    request jsonb NOT NULL,
    result jsonb,
    started_ms bigint NOT NULL,
    deadline_ms bigint NOT NULL,
    ended_ms bigint,
    claimed_by text,
    claimed_until timestamptz
);
CREATE INDEX placements_pending ON placements (started_ms) WHERE status = 'PENDING';
