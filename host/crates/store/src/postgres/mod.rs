//! The backend for many machines: one PostgreSQL table of records, keyed by run, table
//! and key, through tokio-postgres, beside the search queues' slots and the counters
//! (`slots.rs`). The claim protocol's steps are server-side functions over rows of their
//! own; the other write transactions of a run (stage bookkeeping, recovery) are
//! serialised by a transaction-scoped advisory lock on the run, taken first, so they
//! behave as LMDB's do; reads are REPEATABLE READ snapshots and take no lock. The client's futures are
//! polled where they are called; its connection task runs on a runtime of its own, so the
//! store works from plain threads and from inside the engine's runtime alike.

mod slots;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, IsolationLevel, NoTls, Statement};

use super::{COUNTERS, NEXT_EVENT, Queue, Records, StoreError, Table};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS msh_records (
    run text NOT NULL,
    tbl text NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (run, tbl, key)
)";
/// The advisory lock that serialises creating the schema (any constant of our own).
const SCHEMA_LOCK: i64 = 0x6d73_685f_7363_6865;
/// How long a transaction is retried on new connections after the connection failed (a
/// restarted server, a failover, a terminated backend), the first wait, and the longest.
const RETRY_FOR: Duration = Duration::from_secs(120);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct Postgres {
    url: String,
    run: String,
    name: String,
    /// One connection per process; reconnected when the server closed it.
    connection: Mutex<Option<Connection>>,
    /// Set by an error that broke the connection (not one of the statement): the
    /// transaction it happened in is retried on a new connection.
    broken: AtomicBool,
    /// The database's clock less this machine's (f64 bits), as last seen: leases written
    /// into records are on the database's clock, as the slots' are.
    clock_offset: AtomicU64,
    /// When claims of this process last looked for lost trials, by stage.
    requeue_checked: Mutex<std::collections::HashMap<String, Instant>>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Connection {
    client: Client,
    statements: Statements,
    slots: slots::Statements,
}

struct Statements {
    get: Statement,
    scan: Statement,
    put: Statement,
    lock: Statement,
    clock: Statement,
    counter: Statement,
    bump: Statement,
    /// Event keys come from a sequence (`slots::SCHEMA`), not a counter.
    event_key: Statement,
    last_events: Statement,
    adopt_counter: Statement,
}

impl Postgres {
    pub fn open(url: &str, run: &str, name: &str) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("msh-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open { store: name.into(), reason: format!("cannot start its runtime: {e}") })?;
        let store = Self {
            url: url.into(),
            run: run.into(),
            name: name.into(),
            connection: Mutex::new(None),
            broken: AtomicBool::new(false),
            clock_offset: AtomicU64::new(0f64.to_bits()),
            requeue_checked: Mutex::default(),
            runtime: Some(runtime),
        };
        // A backend terminated while the connection is set up is retried; a server that
        // cannot be reached at all is an error at once (a wrong URL, say).
        let connection = store.retried(|| store.connect(false))?;
        *store.connection.lock().expect("no panics while connecting") = Some(connection);
        store.adopt_counters()?;
        Ok(store)
    }

    /// Counters of a run written by an older msh, which kept them among the records,
    /// carried over to the counters table the first time.
    fn adopt_counters(&self) -> Result<(), StoreError> {
        for name in COUNTERS.into_iter().filter(|name| *name != NEXT_EVENT) {
            let Some(bytes) = self.read(|records| records.get(Table::Meta, name.as_bytes()))? else { continue };
            let value: u64 = super::decode(&self.name, Table::Meta, name.as_bytes(), &bytes)?;
            let value = value as i64;
            self.call(|c| {
                pollster::block_on(c.client.execute(&c.statements.adopt_counter, &[&self.run, &name, &value]))
            })?;
        }
        Ok(())
    }

    /// This machine's estimate of the database's clock (seconds since the Unix epoch).
    fn clock(&self) -> f64 {
        super::now() + f64::from_bits(self.clock_offset.load(Ordering::Relaxed))
    }

    fn observe_clock(&self, database: f64) {
        self.clock_offset.store((database - super::now()).to_bits(), Ordering::Relaxed);
    }

    fn error(&self, source: tokio_postgres::Error) -> StoreError {
        if connection_lost(&source) {
            self.broken.store(true, Ordering::Relaxed);
        }
        StoreError::Postgres { store: self.name.clone(), source }
    }

    /// Runs `attempt` until it succeeds, fails for a reason of its own, or connection
    /// failures have gone on for `RETRY_FOR`: each failed attempt (its transaction rolled
    /// back by the server) drops the connection, waits, and tries again on a new one.
    /// A transaction whose COMMIT was cut off may have committed: the claim protocol
    /// (leases, owners checked at finish) makes a second run of it harmless.
    fn retried<T, E>(&self, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.broken.store(false, Ordering::Relaxed);
            let result = attempt();
            if result.is_ok() || !self.broken.swap(false, Ordering::Relaxed) || started.elapsed() > RETRY_FOR {
                return result;
            }
            *self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A new connection, its schema made and statements prepared. `reconnecting`: a
    /// connection this process had was lost, so one that cannot be made now is retried.
    fn connect(&self, reconnecting: bool) -> Result<Connection, StoreError> {
        let runtime = self.runtime.as_ref().expect("the runtime lives as long as the store");
        let url = self.url.clone();
        let connecting = runtime.spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!("postgres connection closed: {e}");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = pollster::block_on(connecting)
            .map_err(|e| StoreError::Open { store: self.name.clone(), reason: e.to_string() })?
            .map_err(|source| {
                // A server that refuses connections while it restarts is worth retrying; one
                // that never answered this process is not (a wrong URL, say).
                if reconnecting {
                    self.broken.store(true, Ordering::Relaxed);
                }
                StoreError::Postgres { store: self.name.clone(), source }
            })?;
        pollster::block_on(async {
            // Several workers may start at once: the schema is created under a lock.
            client.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK]).await?;
            let created = client.batch_execute(&format!("{SCHEMA};{}", slots::SCHEMA)).await;
            client.execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK]).await?;
            created?;
            let statements = Statements {
                get: client.prepare("SELECT value FROM msh_records WHERE run = $1 AND tbl = $2 AND key = $3").await?,
                scan: client
                    .prepare("SELECT key, value FROM msh_records WHERE run = $1 AND tbl = $2 ORDER BY key")
                    .await?,
                put: client
                    .prepare(
                        "INSERT INTO msh_records (run, tbl, key, value) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (run, tbl, key) DO UPDATE SET value = excluded.value",
                    )
                    .await?,
                lock: client
                    .prepare(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), \
                         extract(epoch FROM clock_timestamp())::float8",
                    )
                    .await?,
                clock: client.prepare("SELECT extract(epoch FROM clock_timestamp())::float8").await?,
                counter: client.prepare("SELECT value FROM msh_counters WHERE run = $1 AND name = $2").await?,
                bump: client.prepare("SELECT msh_bump($1, $2)").await?,
                event_key: client.prepare("SELECT msh_event_key()").await?,
                last_events: client
                    .prepare(
                        "SELECT key, value FROM msh_records WHERE run = $1 AND tbl = 'events' \
                         ORDER BY key DESC LIMIT $2",
                    )
                    .await?,
                adopt_counter: client
                    .prepare("INSERT INTO msh_counters (run, name, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .await?,
            };
            let slots = slots::Statements::prepare(&client).await?;
            Ok(Connection { client, statements, slots })
        })
        .map_err(|e| self.error(e))
    }

    /// Runs `f` with the connection, reconnecting first when the last one was closed.
    fn with_connection<T, E: From<StoreError>>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E>) -> Result<T, E> {
        let mut slot = self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = Some(self.connect(true)?);
        }
        f(slot.as_mut().expect("connected above"))
    }

    pub fn write<T, E: From<StoreError>>(&self, mut f: impl FnMut(&mut dyn Records) -> Result<T, E>) -> Result<T, E> {
        self.retried(|| self.write_once(&mut f))
    }

    fn write_once<T, E: From<StoreError>>(&self, f: &mut impl FnMut(&mut dyn Records) -> Result<T, E>) -> Result<T, E> {
        self.with_connection(|Connection { client, statements, slots }| {
            let txn =
                pollster::block_on(client.build_transaction().isolation_level(IsolationLevel::ReadCommitted).start())
                    .map_err(|e| self.error(e))?;
            // Taken first: every statement after it sees what earlier writers committed.
            let row = pollster::block_on(txn.query_one(&statements.lock, &[&self.run])).map_err(|e| self.error(e))?;
            let clock: f64 = row.get(1);
            self.observe_clock(clock);
            let mut records = Txn { txn, statements, slots, store: self, clock };
            let value = f(&mut records)?;
            pollster::block_on(records.txn.commit()).map_err(|e| self.error(e))?;
            Ok(value)
        })
    }

    pub fn read<T>(&self, f: impl Fn(&dyn Records) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.retried(|| self.read_once(&f))
    }

    fn read_once<T>(&self, f: &impl Fn(&dyn Records) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.with_connection(|Connection { client, statements, slots }| {
            let txn = pollster::block_on(
                client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start(),
            )
            .map_err(|e| self.error(e))?;
            let row = pollster::block_on(txn.query_one(&statements.clock, &[])).map_err(|e| self.error(e))?;
            let records = Txn { clock: row.get(0), txn, statements, slots, store: self };
            let value = f(&records)?;
            pollster::block_on(records.txn.commit()).map_err(|e| self.error(e))?;
            Ok(value)
        })
    }
}

/// Whether `e` broke the connection (the server closed it, terminated the backend, shut
/// down, or cannot be reached), as opposed to a failure of the statement.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match e.code() {
        // Class 08 (connection exception) and 57P01-57P03 (admin or crash shutdown, cannot
        // connect now).
        Some(code) => {
            code.code().starts_with("08")
                || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(code)
        }
        // No server error: the connection closed, or an I/O error on its socket.
        None => e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime's tasks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct Txn<'a> {
    txn: tokio_postgres::Transaction<'a>,
    statements: &'a Statements,
    slots: &'a slots::Statements,
    store: &'a Postgres,
    clock: f64,
}

impl Records for Txn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let row = pollster::block_on(self.txn.query_opt(&self.statements.get, &[&self.store.run, &table.name(), &key]))
            .map_err(|e| self.store.error(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn scan(&self, table: Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let rows = pollster::block_on(self.txn.query(&self.statements.scan, &[&self.store.run, &table.name()]))
            .map_err(|e| self.store.error(e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        pollster::block_on(self.txn.execute(&self.statements.put, &[&self.store.run, &table.name(), &key, &value]))
            .map_err(|e| self.store.error(e))?;
        Ok(())
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let row = pollster::block_on(self.txn.query_opt(&self.statements.counter, &[&self.store.run, &name]))
            .map_err(|e| self.store.error(e))?;
        Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    fn bump(&mut self, name: &str) -> Result<u64, StoreError> {
        let statement = if name == NEXT_EVENT { &self.statements.event_key } else { &self.statements.bump };
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
            if name == NEXT_EVENT { &[] } else { &[&self.store.run, &name] };
        let row = pollster::block_on(self.txn.query_one(statement, params)).map_err(|e| self.store.error(e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn last_events(&self, n: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = pollster::block_on(self.txn.query(&self.statements.last_events, &[&self.store.run, &n]))
            .map_err(|e| self.store.error(e))?;
        Ok(rows.into_iter().rev().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn keeps_tally(&self) -> bool {
        false
    }

    fn queue(&self, stage: &str) -> Result<Option<Queue>, StoreError> {
        slots::queue(self.slots, &self.txn, &self.store.run, stage).map_err(|e| self.store.error(e))
    }

    fn clock(&self) -> f64 {
        self.clock
    }
}
