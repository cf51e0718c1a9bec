//! The search queue on PostgreSQL: a stage's budget as slot rows, claimed with `FOR
//! UPDATE SKIP LOCKED`, so that claims of many workers touch rows of their own instead of
//! queueing on one record or lock. A slot is `free`, `reserved` (a searcher proposes into
//! it), `running`, `pending` (requeued, waiting to run again) or `finished`; the stage's
//! trial budget is the number of slots there may be, made as they are needed.
//! Every step of the claim protocol is one server-side function, one round trip and one
//! commit. No claim waits on a row every claim writes: trial ids come with the slots
//! (`msh_grow` bumps the counter once for 1,024), event keys from a sequence, and a
//! finished trial's place in the finish log from `msh_sequence`, which one transaction at
//! a time runs for everything finished since, while the others go on.

use std::time::{Duration, Instant};

use tokio_postgres::Statement;

use super::{Connection, Postgres};
use crate::claims::{Claim, Claimant, Committed, Finished, lost};
use crate::{Event, Owner, Queue, Reservation, StoreError, Table, TrialRecord, TrialStatus, decode, encode};

/// Tables and functions of the slots, made with the records table (`super::SCHEMA`).
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS msh_counters (
    run text NOT NULL,
    name text NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (run, name)
);
CREATE TABLE IF NOT EXISTS msh_slots (
    run text NOT NULL,
    stage text NOT NULL,
    slot bigint NOT NULL,
    state text NOT NULL DEFAULT 'free',
    trial bigint,
    pid bigint,
    session bigint,
    host bigint,
    lease_until float8,
    queued float8,
    rejected bigint NOT NULL DEFAULT 0,
    token bigint,
    logged bytea,
    PRIMARY KEY (run, stage, slot)
);
CREATE INDEX IF NOT EXISTS msh_slots_by_state ON msh_slots (run, stage, state, slot);
CREATE INDEX IF NOT EXISTS msh_slots_unlogged ON msh_slots (run) WHERE logged IS NOT NULL;
CREATE INDEX IF NOT EXISTS msh_slots_by_trial ON msh_slots (run, trial);

CREATE OR REPLACE FUNCTION msh_now() RETURNS float8 LANGUAGE sql AS
$$ SELECT extract(epoch FROM clock_timestamp())::float8 $$;

-- PL/pgSQL, as the functions that write are: it keeps each statement's plan for the
-- session, where a SQL function would parse and plan its body on every call.
CREATE OR REPLACE FUNCTION msh_bump(p_run text, p_name text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    before bigint;
BEGIN
    INSERT INTO msh_counters AS c (run, name, value) VALUES (p_run, p_name, 1)
    ON CONFLICT (run, name) DO UPDATE SET value = c.value + 1
    RETURNING c.value - 1 INTO before;
    RETURN before;
END $$;

CREATE OR REPLACE FUNCTION msh_put(p_run text, p_tbl text, p_key bytea, p_value bytea) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO msh_records (run, tbl, key, value) VALUES (p_run, p_tbl, p_key, p_value)
    ON CONFLICT (run, tbl, key) DO UPDATE SET value = excluded.value;
END $$;

-- Event keys come from a sequence, which locks nothing: the log's order is the order keys
-- were drawn (readers take it whole, never from a position). They start at 2^62, past the
-- dense keys that runs of an older msh counted.
CREATE SEQUENCE IF NOT EXISTS msh_event_keys;

CREATE OR REPLACE FUNCTION msh_event_key() RETURNS bigint LANGUAGE sql AS
$$ SELECT (1::bigint << 62) + nextval('msh_event_keys') $$;

CREATE OR REPLACE FUNCTION msh_log(p_run text, p_event bytea) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM msh_put(p_run, 'events', int8send(msh_event_key()), p_event);
END $$;

-- A free slot of the stage, locked by this transaction, and the trial id it holds.
-- `kind` says what to do when none is: 'grow' (msh_grow may make more) or 'spent'.
CREATE OR REPLACE FUNCTION msh_take_free(
    p_run text, p_stage text, p_limit bigint, OUT taken bigint, OUT trial_id bigint, OUT kind text
) LANGUAGE plpgsql AS $$
BEGIN
    SELECT slot, trial INTO taken, trial_id FROM msh_slots
     WHERE run = p_run AND stage = p_stage AND state = 'free'
     ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF taken IS NULL THEN
        SELECT CASE WHEN coalesce(max(slot) + 1, 0) < p_limit THEN 'grow' ELSE 'spent' END INTO kind
          FROM msh_slots WHERE run = p_run AND stage = p_stage;
    END IF;
END $$;

-- Makes up to 1024 more slots for a stage, each with the trial id a reservation of it
-- gets (the trial counter is bumped once for them all), unless some are free already:
-- its own short transaction, so claims never wait on slots being made.
CREATE OR REPLACE FUNCTION msh_grow(p_run text, p_stage text, p_limit bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    top bigint;
    n bigint;
    first_id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_run || '/' || p_stage, 1));
    IF EXISTS (SELECT 1 FROM msh_slots WHERE run = p_run AND stage = p_stage AND state = 'free') THEN
        RETURN 0;
    END IF;
    SELECT coalesce(max(slot) + 1, 0) INTO top FROM msh_slots WHERE run = p_run AND stage = p_stage;
    n := least(1024, p_limit - top);
    IF n <= 0 THEN
        RETURN 0;
    END IF;
    INSERT INTO msh_counters AS c (run, name, value) VALUES (p_run, 'next_trial', n)
    ON CONFLICT (run, name) DO UPDATE SET value = c.value + n
    RETURNING c.value - n INTO first_id;
    INSERT INTO msh_slots (run, stage, slot, trial)
    SELECT p_run, p_stage, top + i, first_id + i FROM generate_series(0, n - 1) AS i;
    RETURN n;
END $$;

-- Ends a running trial's slot if its owner still holds it, with its finish-log entry
-- waiting in `logged` for `msh_sequence`. Every step takes the slot rows it needs before
-- any counter: a transaction that holds a counter never waits for a slot, so the two
-- kinds of lock cannot deadlock.
CREATE OR REPLACE FUNCTION msh_finish_slot(
    p_run text, p_stage text, p_trial bigint, p_pid bigint, p_session bigint, p_host bigint, p_logged bytea
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE msh_slots SET state = 'finished', pid = NULL, session = NULL, host = NULL, lease_until = NULL,
           logged = p_logged
     WHERE run = p_run AND trial = p_trial AND stage = p_stage AND state = 'running'
       AND pid = p_pid AND session = p_session AND host = p_host;
    RETURN FOUND;
END $$;

-- Records the result whose slot `msh_finish_slot` ended (kept), or logs p_dropped.
CREATE OR REPLACE FUNCTION msh_finish_record(
    p_run text, p_trial bigint, p_kept boolean, p_record bytea, p_event bytea, p_dropped bytea
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT p_kept THEN
        PERFORM msh_log(p_run, p_dropped);
        RETURN;
    END IF;
    PERFORM msh_put(p_run, 'trials', int8send(p_trial), p_record);
    PERFORM msh_log(p_run, p_event);
END $$;

-- Gives the finished trials waiting in `logged` their places in the finish log. The log
-- must be dense and in commit order (`finished_since` readers move past each position
-- once), so one transaction at a time appends, under a lock held to its commit: a claim
-- tries it (p_wait false) and leaves it to the holder, or the next one, when taken; a
-- reader waits for it (p_wait true), so it misses nothing committed before it asked.
CREATE OR REPLACE FUNCTION msh_sequence(p_run text, p_wait boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    trials bigint[];
    entries bytea[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM msh_slots WHERE run = p_run AND logged IS NOT NULL) THEN
        RETURN;
    END IF;
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_run, 2));
    ELSIF NOT pg_try_advisory_xact_lock(hashtextextended(p_run, 2)) THEN
        RETURN;
    END IF;
    -- The slots first, then the counter.
    SELECT array_agg(trial ORDER BY trial), array_agg(logged ORDER BY trial) INTO trials, entries
      FROM (SELECT trial, logged FROM msh_slots WHERE run = p_run AND logged IS NOT NULL FOR UPDATE) AS waiting;
    IF trials IS NULL THEN
        RETURN;
    END IF;
    UPDATE msh_slots SET logged = NULL WHERE run = p_run AND trial = ANY(trials) AND logged IS NOT NULL;
    FOR i IN 1 .. array_length(trials, 1) LOOP
        PERFORM msh_put(p_run, 'finished', int8send(msh_bump(p_run, 'next_finished')), entries[i]);
    END LOOP;
END $$;

-- Records a result if its owner still holds the trial; else logs p_dropped.
CREATE OR REPLACE FUNCTION msh_finish(
    p_run text, p_stage text, p_trial bigint, p_pid bigint, p_session bigint, p_host bigint,
    p_record bytea, p_logged bytea, p_event bytea, p_dropped bytea
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    kept boolean := msh_finish_slot(p_run, p_stage, p_trial, p_pid, p_session, p_host, p_logged);
BEGIN
    PERFORM msh_finish_record(p_run, p_trial, kept, p_record, p_event, p_dropped);
    PERFORM msh_sequence(p_run, false);
    RETURN kept;
END $$;

-- A requeued trial (kind 'trial', its record), else a reservation (kind 'reserved', a
-- fresh trial id), else 'grow' (call msh_grow, then claim again) or 'spent'; with a
-- result recorded first when p_finished is given.
-- p_token names the claim: a call run again (p_again) after a lost connection gets what
-- its first run took (and its result, if any, as not kept: the caller looks at what was
-- stored).
CREATE OR REPLACE FUNCTION msh_claim(
    p_run text, p_stage text, p_pid bigint, p_session bigint, p_host bigint, p_lease float8, p_limit bigint,
    p_finished bigint, p_record bytea, p_logged bytea, p_event bytea, p_dropped bytea, p_token bigint,
    p_again boolean, OUT kind text, OUT trial_id bigint, OUT stored bytea, OUT clock float8, OUT kept boolean
) LANGUAGE plpgsql AS $$
DECLARE
    taken bigint;
BEGIN
    clock := msh_now();
    IF p_again THEN
        SELECT CASE WHEN state = 'reserved' THEN 'reserved' ELSE 'trial' END, trial INTO kind, trial_id
          FROM msh_slots
         WHERE run = p_run AND stage = p_stage AND state IN ('reserved', 'running') AND token = p_token
           AND pid = p_pid AND session = p_session AND host = p_host;
    END IF;
    IF kind IS NOT NULL THEN
        kept := p_finished IS NULL;
        SELECT value INTO stored FROM msh_records
         WHERE kind = 'trial' AND run = p_run AND tbl = 'trials' AND key = int8send(trial_id);
        RETURN;
    END IF;
    kept := p_finished IS NULL OR msh_finish_slot(p_run, p_stage, p_finished, p_pid, p_session, p_host, p_logged);
    SELECT slot, trial INTO taken, trial_id FROM msh_slots
     WHERE run = p_run AND stage = p_stage AND state = 'pending'
     ORDER BY queued DESC, slot LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF taken IS NOT NULL THEN
        kind := 'trial';
        UPDATE msh_slots SET state = 'running', pid = p_pid, session = p_session, host = p_host,
               lease_until = clock + p_lease, queued = NULL, token = p_token
         WHERE run = p_run AND stage = p_stage AND slot = taken;
        SELECT value INTO stored FROM msh_records
         WHERE run = p_run AND tbl = 'trials' AND key = int8send(trial_id);
    ELSE
        SELECT f.taken, f.trial_id, coalesce(f.kind, 'reserved') INTO taken, trial_id, kind
          FROM msh_take_free(p_run, p_stage, p_limit) AS f;
        IF taken IS NOT NULL THEN
            UPDATE msh_slots SET state = 'reserved', pid = p_pid, session = p_session, host = p_host,
                   lease_until = clock + p_lease, token = p_token
             WHERE run = p_run AND stage = p_stage AND slot = taken;
        END IF;
    END IF;
    IF p_finished IS NOT NULL THEN
        PERFORM msh_finish_record(p_run, p_finished, kept, p_record, p_event, p_dropped);
        PERFORM msh_sequence(p_run, false);
    END IF;
END $$;

-- Starts the proposal for a reservation as a running trial: 'running'; else, when the
-- reservation expired meanwhile, a free slot is taken for it if the budget allows
-- ('grow': call msh_grow and commit again; 'spent').
CREATE OR REPLACE FUNCTION msh_commit(
    p_run text, p_stage text, p_trial bigint, p_pid bigint, p_session bigint, p_host bigint,
    p_lease float8, p_limit bigint, p_record bytea, p_event bytea, p_rejected bigint
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    taken bigint;
    held text;
    unused bigint;
    kind text;
BEGIN
    SELECT slot, state INTO taken, held FROM msh_slots
     WHERE run = p_run AND trial = p_trial AND stage = p_stage AND state IN ('reserved', 'running')
       AND pid = p_pid AND session = p_session AND host = p_host
     FOR UPDATE;
    IF held = 'running' THEN
        RETURN 'running';  -- a call run again after a lost connection: its first run committed
    END IF;
    IF taken IS NULL THEN
        SELECT f.taken, f.trial_id, f.kind INTO taken, unused, kind FROM msh_take_free(p_run, p_stage, p_limit) AS f;
        IF taken IS NULL THEN
            RETURN kind;
        END IF;
    END IF;
    UPDATE msh_slots
       SET state = 'running', trial = p_trial, pid = p_pid, session = p_session, host = p_host,
           lease_until = msh_now() + p_lease, rejected = rejected + p_rejected
     WHERE run = p_run AND stage = p_stage AND slot = taken;
    PERFORM msh_put(p_run, 'trials', int8send(p_trial), p_record);
    PERFORM msh_log(p_run, p_event);
    RETURN 'running';
END $$;

-- Frees a reservation, counting the proposals refused while it was held. The slot gets a
-- fresh trial id: a late commit of the old one must not meet a new reservation under it.
CREATE OR REPLACE FUNCTION msh_release(p_run text, p_stage text, p_trial bigint, p_rejected bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE msh_slots
       SET state = 'free', trial = msh_bump(p_run, 'next_trial'), pid = NULL, session = NULL, host = NULL,
           lease_until = NULL, rejected = rejected + p_rejected
     WHERE run = p_run AND trial = p_trial AND stage = p_stage AND state = 'reserved';
END $$;

-- Puts a running trial back in the queue, or drops a reservation, unless its owner
-- renewed the lease since it was seen (p_seen); logs p_event when it did.
CREATE OR REPLACE FUNCTION msh_requeue(
    p_run text, p_stage text, p_trial bigint, p_pid bigint, p_session bigint, p_host bigint, p_seen float8,
    p_record bytea, p_event bytea
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_record IS NULL THEN
        UPDATE msh_slots SET state = 'free', trial = msh_bump(p_run, 'next_trial'), pid = NULL, session = NULL,
               host = NULL, lease_until = NULL
         WHERE run = p_run AND trial = p_trial AND stage = p_stage AND state = 'reserved'
           AND pid = p_pid AND session = p_session AND host = p_host AND lease_until <= p_seen;
    ELSE
        UPDATE msh_slots SET state = 'pending', pid = NULL, session = NULL, host = NULL, lease_until = NULL,
               queued = msh_now()
         WHERE run = p_run AND trial = p_trial AND stage = p_stage AND state = 'running'
           AND pid = p_pid AND session = p_session AND host = p_host AND lease_until <= p_seen;
    END IF;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_record IS NOT NULL THEN
        PERFORM msh_put(p_run, 'trials', int8send(p_trial), p_record);
    END IF;
    PERFORM msh_log(p_run, p_event);
    RETURN true;
END $$;
"#;

/// The statements of the slots, prepared once per connection.
pub(super) struct Statements {
    claim: Statement,
    finish: Statement,
    commit: Statement,
    release: Statement,
    requeue: Statement,
    /// Slots whose owner may have lost them: lease expired, or another process of `host`.
    doubtful: Statement,
    renew: Statement,
    running: Statement,
    queue: Statement,
    tally: Statement,
    put: Statement,
    /// A running trial's record, only while its slot still runs (lease renewals).
    put_running: Statement,
    get: Statement,
    slotted: Statement,
    add_slot: Statement,
    grow: Statement,
    sequence: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &tokio_postgres::Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            claim: client
                .prepare(
                    "SELECT kind, trial_id, stored, clock, kept \
                     FROM msh_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .await?,
            finish: client.prepare("SELECT msh_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)").await?,
            commit: client.prepare("SELECT msh_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)").await?,
            release: client.prepare("SELECT msh_release($1, $2, $3, $4)").await?,
            requeue: client.prepare("SELECT msh_requeue($1, $2, $3, $4, $5, $6, $7, $8, $9)").await?,
            doubtful: client
                .prepare(
                    "SELECT s.state, s.trial, s.pid, s.session, s.host, s.lease_until, r.value, msh_now() \
                     FROM msh_slots s LEFT JOIN msh_records r \
                       ON r.run = s.run AND r.tbl = 'trials' AND r.key = int8send(s.trial) \
                     WHERE s.run = $1 AND s.stage = $2 AND s.state IN ('reserved', 'running') \
                       AND (s.lease_until < msh_now() OR (s.host = $3 AND s.pid <> $4))",
                )
                .await?,
            renew: client
                .prepare(
                    "UPDATE msh_slots SET lease_until = msh_now() + $6 \
                     WHERE run = $1 AND trial = ANY($2) AND state IN ('reserved', 'running') \
                       AND pid = $3 AND session = $4 AND host = $5 \
                     RETURNING trial, state, lease_until",
                )
                .await?,
            running: client
                .prepare(
                    "SELECT r.value FROM msh_slots s JOIN msh_records r \
                       ON r.run = s.run AND r.tbl = 'trials' AND r.key = int8send(s.trial) \
                     WHERE s.run = $1 AND s.stage = $2 \
                       AND (s.state = 'running' OR (s.state = 'finished' AND s.logged IS NOT NULL)) \
                     ORDER BY s.trial",
                )
                .await?,
            queue: client
                .prepare(
                    "SELECT state, trial, pid, session, host, lease_until FROM msh_slots \
                     WHERE run = $1 AND stage = $2 AND state IN ('pending', 'running', 'reserved') \
                     ORDER BY queued DESC NULLS LAST, trial",
                )
                .await?,
            tally: client
                .prepare(
                    "SELECT count(*), count(*) FILTER (WHERE state = 'finished'), coalesce(sum(rejected), 0)::bigint \
                     FROM msh_slots WHERE run = $1 AND stage = $2",
                )
                .await?,
            put: client.prepare("SELECT msh_put($1, 'trials', int8send($2), $3)").await?,
            // The slot row is locked first, as every protocol step does: a finish that
            // ended it meanwhile leaves the record to the finish.
            put_running: client
                .prepare(
                    "UPDATE msh_records SET value = $3 \
                     WHERE run = $1 AND tbl = 'trials' AND key = int8send($2) \
                       AND EXISTS (SELECT 1 FROM msh_slots \
                                    WHERE run = $1 AND trial = $2 AND state = 'running' FOR SHARE)",
                )
                .await?,
            get: client
                .prepare("SELECT value FROM msh_records WHERE run = $1 AND tbl = 'trials' AND key = int8send($2)")
                .await?,
            slotted: client
                .prepare("SELECT trial FROM msh_slots WHERE run = $1 AND stage = $2 AND state <> 'free'")
                .await?,
            grow: client.prepare("SELECT msh_grow($1, $2, $3)").await?,
            sequence: client.prepare("SELECT msh_sequence($1, true)").await?,
            add_slot: client
                .prepare(
                    "INSERT INTO msh_slots (run, stage, slot, state, trial, pid, session, host, lease_until) \
                     SELECT $1, $2, coalesce(max(slot) + 1, 0), $3, $4, $5, $6, $7, $8 \
                     FROM msh_slots WHERE run = $1 AND stage = $2",
                )
                .await?,
        })
    }
}

/// An owner as the slot columns hold it (PostgreSQL has no unsigned integers).
fn owner_columns(me: &Owner) -> (i64, i64, i64) {
    (i64::from(me.pid), me.session as i64, me.host as i64)
}

fn owner_of(pid: Option<i64>, session: Option<i64>, host: Option<i64>, lease_until: Option<f64>) -> Option<Owner> {
    Some(Owner {
        pid: u32::try_from(pid?).ok()?,
        session: session? as u64,
        host: host? as u64,
        lease_until: lease_until.unwrap_or(0.0),
    })
}

/// How often a process's claims look for trials whose owner lost them.
const REQUEUE_EVERY: Duration = Duration::from_millis(250);

/// Argument `i` of `msh_finish` for a result being recorded (`Postgres::finish_arguments`).
fn argument(finishing: Option<&(i64, [Vec<u8>; 4])>, i: usize) -> Option<&[u8]> {
    finishing.map(|(_, args)| args[i].as_slice())
}

/// Budgets past what a bigint holds are unbounded anyway.
fn limit(limit: u64) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Postgres {
    /// Runs `f` on the connection, retried on a new one after a lost connection.
    pub(super) fn call<T>(
        &self,
        f: impl Fn(&mut Connection) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        self.retried(|| self.with_connection(|c| f(c).map_err(|e| self.error(e))))
    }

    /// The one value a statement of the slots answers with.
    fn value<T: for<'a> tokio_postgres::types::FromSql<'a>>(
        &self,
        statement: fn(&Statements) -> &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<T, StoreError> {
        self.call(|c| Ok(pollster::block_on(c.client.query_one(statement(&c.slots), params))?.get(0)))
    }

    fn event(&self, stage: &str, trial: u64, message: &str) -> Vec<u8> {
        let event =
            Event { time: self.clock(), stage: Some(stage.into()), trial: Some(trial), message: message.into() };
        encode(&event)
    }

    /// The trial as it will be recorded when `who` starts it: running under a lease.
    fn started(&self, who: &Claimant, mut trial: TrialRecord) -> TrialRecord {
        let now = self.clock();
        trial.status = TrialStatus::Running;
        trial.owner = Some(Owner { lease_until: now + who.lease, ..*who.me });
        trial.worker = Some(who.worker.into());
        trial.attempts += 1;
        trial.started = Some(now);
        trial
    }

    fn decode_trial(&self, id: u64, bytes: &[u8]) -> Result<TrialRecord, StoreError> {
        decode(&self.name, Table::Trials, &id.to_be_bytes(), bytes)
    }

    /// The arguments of `msh_finish` for `trial`'s result: its record, its finish-log
    /// entry, the event when kept and the one when dropped.
    fn finish_arguments(&self, who: &Claimant, trial: &TrialRecord, event: &str) -> [Vec<u8>; 4] {
        let dropped = "result dropped: its lease expired and it was requeued before it finished";
        [
            encode(&TrialRecord { owner: None, ..trial.clone() }),
            encode(&trial.id),
            self.event(who.stage, trial.id, event),
            self.event(who.stage, trial.id, dropped),
        ]
    }

    pub(crate) fn claim(
        &self,
        who: &Claimant,
        finished: Option<(&TrialRecord, &str)>,
    ) -> Result<(Finished, Claim), StoreError> {
        let (pid, session, host) = owner_columns(who.me);
        let finish = finished.map(|(trial, event)| (trial.id as i64, self.finish_arguments(who, trial, event)));
        let token = (crate::random_u64() >> 1) as i64;
        let again = std::cell::Cell::new(false);
        // The result is recorded by the first call; one after `msh_grow` only claims.
        let mut finishing = finish.as_ref();
        let mut recorded = None;
        let (kind, id, stored) = loop {
            let row = self.call(|c| {
                pollster::block_on(c.client.query_one(
                    &c.slots.claim,
                    &[
                        &self.run,
                        &who.stage,
                        &pid,
                        &session,
                        &host,
                        &who.lease,
                        &limit(who.limit),
                        &finishing.map(|(id, _)| *id),
                        &argument(finishing, 0),
                        &argument(finishing, 1),
                        &argument(finishing, 2),
                        &argument(finishing, 3),
                        &token,
                        &again.replace(true),
                    ],
                ))
            })?;
            let (kind, id, stored, clock, kept): (String, Option<i64>, Option<Vec<u8>>, f64, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            self.observe_clock(clock);
            recorded.get_or_insert(kept);
            if kind != "grow" {
                break (kind, id, stored);
            }
            finishing = None;
            self.grow(who)?;
        };
        let kept = recorded.unwrap_or(true);
        let kept = if kept { Finished::Recorded } else { Finished::LeaseLost };
        let claim = match (kind.as_str(), id) {
            ("trial", Some(id)) => {
                let id = id as u64;
                let bytes = stored.ok_or_else(|| StoreError::NoTrial { id, store: self.name.clone() })?;
                let trial = self.started(who, self.decode_trial(id, &bytes)?);
                self.put_trial(&trial)?;
                Claim::Trial(trial)
            }
            ("reserved", Some(id)) => Claim::Reserved(id as u64),
            _ => Claim::Spent,
        };
        Ok((kept, claim))
    }

    pub(crate) fn finish(&self, who: &Claimant, trial: &TrialRecord, event: &str) -> Result<Finished, StoreError> {
        let (pid, session, host) = owner_columns(who.me);
        let args = self.finish_arguments(who, trial, event);
        let kept: bool = self.value(
            |s| &s.finish,
            &[&self.run, &who.stage, &(trial.id as i64), &pid, &session, &host, &args[0], &args[1], &args[2], &args[3]],
        )?;
        Ok(if kept { Finished::Recorded } else { Finished::LeaseLost })
    }

    pub(crate) fn commit(
        &self,
        who: &Claimant,
        trial: TrialRecord,
        rejected: u64,
        event: &str,
    ) -> Result<Committed, StoreError> {
        let (pid, session, host) = owner_columns(who.me);
        let trial = self.started(who, trial);
        let (record, event) = (encode(&trial), self.event(who.stage, trial.id, event));
        let rejected = i64::try_from(rejected).unwrap_or(i64::MAX);
        loop {
            let outcome: String = self.value(
                |s| &s.commit,
                &[
                    &self.run,
                    &who.stage,
                    &(trial.id as i64),
                    &pid,
                    &session,
                    &host,
                    &who.lease,
                    &limit(who.limit),
                    &record,
                    &event,
                    &rejected,
                ],
            )?;
            match outcome.as_str() {
                "running" => return Ok(Committed::Running(trial)),
                "grow" => self.grow(who)?,
                _ => return Ok(Committed::Spent),
            }
        }
    }

    /// Gives every trial finished so far its place in the finish log, waiting for one who
    /// does that now: a reader of the log then misses nothing.
    pub(crate) fn sequence(&self) -> Result<(), StoreError> {
        self.call(|c| pollster::block_on(c.client.execute(&c.slots.sequence, &[&self.run]))).map(drop)
    }

    /// Makes more slots for `who`'s stage (`msh_grow`), or lets others' claims of the
    /// free ones end.
    fn grow(&self, who: &Claimant) -> Result<(), StoreError> {
        let made: i64 = self.value(|s| &s.grow, &[&self.run, &who.stage, &limit(who.limit)])?;
        if made == 0 {
            // The free slots there are, other claims hold for the moment.
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub(crate) fn release(&self, stage: &str, id: u64, rejected: u64) -> Result<(), StoreError> {
        let rejected = i64::try_from(rejected).unwrap_or(i64::MAX);
        self.call(|c| {
            pollster::block_on(c.client.execute(&c.slots.release, &[&self.run, &stage, &(id as i64), &rejected]))
        })
        .map(drop)
    }

    /// Puts `trial`, running under `owner` as last seen (lease included), back in the
    /// queue, saying `why`; false when the owner renewed its lease or let go meanwhile.
    fn requeue_seen(&self, stage: &str, mut trial: TrialRecord, owner: &Owner, why: &str) -> Result<bool, StoreError> {
        let (pid, session, host) = owner_columns(owner);
        trial.status = TrialStatus::Pending;
        trial.owner = None;
        let (record, event) = (encode(&trial), self.event(stage, trial.id, why));
        self.value(
            |s| &s.requeue,
            &[&self.run, &stage, &(trial.id as i64), &pid, &session, &host, &owner.lease_until, &Some(&record), &event],
        )
    }

    /// Puts a trial that `me` holds back in the queue, saying `why`.
    pub(crate) fn requeue(&self, stage: &str, trial: &TrialRecord, me: &Owner, why: &str) -> Result<bool, StoreError> {
        self.requeue_seen(stage, trial.clone(), &Owner { lease_until: f64::INFINITY, ..*me }, why)
    }

    /// Whether a claim should look for lost trials of `stage` first: at most every
    /// `REQUEUE_EVERY` per process, as leases last seconds; a look costs a query.
    pub(crate) fn due_for_requeue(&self, stage: &str) -> bool {
        let mut checked = self.requeue_checked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = checked.get(stage).is_none_or(|at| at.elapsed() >= REQUEUE_EVERY);
        if due {
            checked.insert(stage.to_string(), Instant::now());
        }
        due
    }

    pub(crate) fn requeue_expired(&self, stage: &str, me: &Owner) -> Result<Vec<u64>, StoreError> {
        let (pid, _, host) = owner_columns(me);
        let rows =
            self.call(|c| pollster::block_on(c.client.query(&c.slots.doubtful, &[&self.run, &stage, &host, &pid])))?;
        let mut requeued = Vec::new();
        for row in rows {
            let (state, id): (String, i64) = (row.get(0), row.get(1));
            let Some(owner) = owner_of(row.get(2), row.get(3), row.get(4), row.get(5)) else { continue };
            let (stored, now): (Option<Vec<u8>>, f64) = (row.get(6), row.get(7));
            if !owner.expired(now, me) {
                continue;
            }
            let id = id as u64;
            if state == "reserved" {
                let (pid, session, host) = owner_columns(&owner);
                let why = format!("reservation dropped: pid {}'s lease expired while it proposed", owner.pid);
                let event = self.event(stage, id, &why);
                self.call(|c| {
                    pollster::block_on(c.client.execute(
                        &c.slots.requeue,
                        &[
                            &self.run,
                            &stage,
                            &(id as i64),
                            &pid,
                            &session,
                            &host,
                            &owner.lease_until,
                            &None::<&[u8]>,
                            &event,
                        ],
                    ))
                })?;
                continue;
            }
            let Some(bytes) = stored else { continue };
            let trial = TrialRecord { owner: Some(owner), ..self.decode_trial(id, &bytes)? };
            let Some(why) = lost(&trial, now, me) else { continue };
            if self.requeue_seen(stage, trial, &owner, &why)? {
                requeued.push(id);
            }
        }
        Ok(requeued)
    }

    pub(crate) fn renew(&self, ids: &[u64], me: &Owner, lease: f64) -> Result<Vec<u64>, StoreError> {
        let (pid, session, host) = owner_columns(me);
        let wanted: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        let rows = self.call(|c| {
            pollster::block_on(c.client.query(&c.slots.renew, &[&self.run, &wanted, &pid, &session, &host, &lease]))
        })?;
        let mut held = Vec::new();
        for row in rows {
            let (id, state, lease_until): (i64, String, f64) = (row.get(0), row.get(1), row.get(2));
            let id = id as u64;
            held.push(id);
            // The record's copy of the lease is what views show (`stale` trials).
            // Written only while the slot still runs: a finish that commits between this
            // read and the write would otherwise be overwritten by the running record.
            if state == "running"
                && let Some(mut trial) = self.get_trial(id)?
            {
                trial.owner = Some(Owner { lease_until, ..*me });
                let record = encode(&trial);
                self.call(|c| {
                    pollster::block_on(c.client.execute(&c.slots.put_running, &[&self.run, &(id as i64), &record]))
                })?;
            }
        }
        Ok(ids.iter().copied().filter(|id| !held.contains(id)).collect())
    }

    /// The trials of `stage` running, and those finished whose finish-log entry waits for
    /// `msh_sequence`: a finish whose commit came after a reader's `finished_since` read
    /// the log is in neither the log nor the running slots until another sequences it, and
    /// a search would propose it again.
    pub(crate) fn running(&self, stage: &str) -> Result<Vec<TrialRecord>, StoreError> {
        let rows = self.call(|c| pollster::block_on(c.client.query(&c.slots.running, &[&self.run, &stage])))?;
        rows.iter()
            .map(|row| {
                let bytes: Vec<u8> = row.get(0);
                decode(&self.name, Table::Trials, b"running", &bytes)
            })
            .collect()
    }

    /// Gives every trial of `stage` without a slot (a run of an older msh) the slot its
    /// record's status says.
    pub(crate) fn align_queue(
        &self,
        stage: &str,
        trials: impl FnOnce() -> Result<Vec<TrialRecord>, StoreError>,
    ) -> Result<(), StoreError> {
        // A stage with slots has had them from its first claim: only a run of an older msh
        // needs its trials read (every start would otherwise decode them all).
        let slots: i64 =
            self.call(|c| Ok(pollster::block_on(c.client.query_one(&c.slots.tally, &[&self.run, &stage]))?.get(0)))?;
        if slots > 0 {
            return Ok(());
        }
        let trials = trials()?;
        let slotted: std::collections::HashSet<i64> = self
            .call(|c| pollster::block_on(c.client.query(&c.slots.slotted, &[&self.run, &stage])))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for trial in trials.iter().filter(|t| t.stage == stage && !slotted.contains(&(t.id as i64))) {
            let state = match trial.status {
                TrialStatus::Pending => "pending",
                TrialStatus::Running => "running",
                _ => "finished",
            };
            let owner = trial.owner.filter(|_| trial.status == TrialStatus::Running);
            let (pid, session, host) =
                owner.as_ref().map(owner_columns).map_or((None, None, None), |(p, s, h)| (Some(p), Some(s), Some(h)));
            let lease = owner.map(|o| o.lease_until);
            self.call(|c| {
                pollster::block_on(c.client.execute(
                    &c.slots.add_slot,
                    &[&self.run, &stage, &state, &(trial.id as i64), &pid, &session, &host, &lease],
                ))
            })?;
        }
        Ok(())
    }

    fn get_trial(&self, id: u64) -> Result<Option<TrialRecord>, StoreError> {
        let row = self.call(|c| pollster::block_on(c.client.query_opt(&c.slots.get, &[&self.run, &(id as i64)])))?;
        row.map(|row| self.decode_trial(id, &row.get::<_, Vec<u8>>(0))).transpose()
    }

    fn put_trial(&self, trial: &TrialRecord) -> Result<(), StoreError> {
        let record = encode(trial);
        self.call(|c| pollster::block_on(c.client.execute(&c.slots.put, &[&self.run, &(trial.id as i64), &record])))
            .map(drop)
    }
}

/// The queue of `stage`, from its slots (`None` when it has none: not a search).
pub(super) fn queue(
    statements: &Statements,
    txn: &tokio_postgres::Transaction<'_>,
    run: &str,
    stage: &str,
) -> Result<Option<Queue>, tokio_postgres::Error> {
    let tally = pollster::block_on(txn.query_one(&statements.tally, &[&run, &stage]))?;
    let (slots, finished, rejected): (i64, i64, i64) = (tally.get(0), tally.get(1), tally.get(2));
    if slots == 0 {
        return Ok(None);
    }
    let mut queue = Queue { finished: finished as u64, rejected: rejected as u64, ..Queue::default() };
    for row in pollster::block_on(txn.query(&statements.queue, &[&run, &stage]))? {
        let (state, id): (String, i64) = (row.get(0), row.get(1));
        let id = id as u64;
        match state.as_str() {
            "pending" => queue.pending.push(id),
            "running" => queue.in_flight.push(id),
            _ => {
                if let Some(owner) = owner_of(row.get(2), row.get(3), row.get(4), row.get(5)) {
                    queue.reserved.push(Reservation { id, owner });
                }
            }
        }
    }
    Ok(Some(queue))
}
