//! The trial store: run metadata, stages, trials, an event log, a finish log, early
//! stopping's values and searcher snapshots, as MessagePack records behind a schema
//! version, in one of two backends. LMDB (in the run directory) is the embedded default;
//! PostgreSQL lets workers on many machines share a run. Every change is one serialisable transaction
//! (`Store::write`); the lease protocol that trainers claim trials with is `claims.rs`.

mod claims;
mod lmdb;
mod postgres;
mod queries;
mod records;
mod tally;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use claims::{Claim, Claimant, Committed, Finished, StageClaim, host_name, lost};
pub use queries::{Stale, best_trial, pareto_front, stale, viewer};
pub use records::{
    BlockRef, Event, Metrics, Owner, ParamValue, Reservation, RunMeta, RungRecord, SnapshotRecord, StageRecord,
    StageState, TrialRecord, TrialStatus,
};
pub use tally::{StageTally, Tally};

/// Bumped when a record changes incompatibly.
pub const STORE_SCHEMA: u32 = 1;
/// The directory inside a run directory that holds the LMDB files.
pub const STORE_DIR: &str = "store";
/// The file in a run directory that names its PostgreSQL run (`StoreFile`).
pub const STORE_FILE: &str = "store.json";
/// The environment variable that gives a PostgreSQL store's URL when `--store` does not.
pub const STORE_ENV: &str = "MSH_STORE";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {store}: {source}")]
    Lmdb { store: String, source: ::lmdb::Error },
    #[error("store {store}: {source}")]
    Postgres { store: String, source: tokio_postgres::Error },
    #[error("store {store}: {reason}")]
    Open { store: String, reason: String },
    #[error("cannot create store {}: {source}", dir.display())]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("store {store}: record {key} of `{table}` is corrupt: {reason}")]
    Corrupt { store: String, table: &'static str, key: String, reason: String },
    #[error(
        "store {store}: record {key} of `{table}` has schema version {found}; this msh reads version {STORE_SCHEMA}"
    )]
    Schema { store: String, table: &'static str, key: String, found: u32 },
    #[error("store {store}: no trial {id}")]
    NoTrial { id: u64, store: String },
    #[error("store {store}: no stage `{stage}`")]
    NoStage { stage: String, store: String },
}

/// Seconds since the Unix epoch, by this machine's clock.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The tables every backend keeps. Keys are bytes, ordered bytewise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Meta,
    Stages,
    Trials,
    Events,
    /// Finish order -> trial id, so a reader can fetch only what finished since it last looked.
    Finished,
    /// Early stopping's values: stage name, 0, epoch (u32 big-endian) -> `RungRecord`.
    Rungs,
    /// Stage name -> its searcher's latest snapshot (`Option<SnapshotRecord>`: `None` once
    /// forgotten). In the store rather than a file of the run directory: every worker of
    /// a PostgreSQL run reaches it, and it is written in a transaction like the trials it
    /// covers.
    Snapshots,
}

impl Table {
    /// In declaration order, so `table as usize` is a table's place here.
    pub const ALL: [Table; 7] =
        [Table::Meta, Table::Stages, Table::Trials, Table::Events, Table::Finished, Table::Rungs, Table::Snapshots];

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Stages => "stages",
            Table::Trials => "trials",
            Table::Events => "events",
            Table::Finished => "finished",
            Table::Rungs => "rungs",
            Table::Snapshots => "snapshots",
        }
    }
}

/// What `Records::each` calls with each record: its key and value.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// What a backend offers inside one transaction: raw records by table and key.
pub(crate) trait Records {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every record of a table, in key order.
    fn scan(&self, table: Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Hands every record of a table to `f`, in key order; a backend that can hands them
    /// over where they lie, without a copy of the whole table.
    fn each(&self, table: Table, f: &mut Visit<'_>) -> Result<(), StoreError> {
        for (key, value) in self.scan(table)? {
            f(&key, &value)?;
        }
        Ok(())
    }
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// A counter's value (0 before its first `bump`).
    fn counter(&self, name: &str) -> Result<u64, StoreError>;
    /// Adds one to a counter; its value before.
    fn bump(&mut self, name: &str) -> Result<u64, StoreError>;
    /// The last `n` records of the event log, oldest first. Its keys are dense positions
    /// unless a backend says otherwise.
    fn last_events(&self, n: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let end = self.counter(NEXT_EVENT)?;
        let mut out = Vec::new();
        for seq in end.saturating_sub(n as u64)..end {
            let key = seq.to_be_bytes();
            out.extend(self.get(Table::Events, &key)?.map(|value| (key.to_vec(), value)));
        }
        Ok(out)
    }
    /// Whether every trial write goes through `Txn::put_trial`, which keeps the run's
    /// `Tally` (PostgreSQL's claim functions write trials themselves: it keeps none).
    fn keeps_tally(&self) -> bool {
        true
    }
    /// Where a backend keeps a search stage's queue apart from its record (PostgreSQL's
    /// budget slots), the queue as it stands; `None` when the record holds it.
    fn queue(&self, _stage: &str) -> Result<Option<Queue>, StoreError> {
        Ok(None)
    }
    /// The store's clock (seconds since the Unix epoch) when the transaction began: the
    /// one clock that every worker's leases are compared against.
    fn clock(&self) -> f64;
}

enum Backend {
    Lmdb(lmdb::Lmdb),
    Postgres(postgres::Postgres),
}

/// An open store.
pub struct Store {
    backend: Backend,
    /// How errors name it: a directory, or a PostgreSQL URL (without password) and run.
    name: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("name", &self.name).finish()
    }
}

/// `RUN_DIR/store.json`: which PostgreSQL run a run directory belongs to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreFile {
    /// The run's key in the database (`<directory name>-<random hex>`).
    pub run: String,
    /// The URL the run was created with, without its password: the default for commands
    /// given neither `--store` nor `MSH_STORE`.
    pub url: String,
}

impl StoreFile {
    fn read(run_dir: &Path) -> Result<Option<Self>, StoreError> {
        let path = run_dir.join(STORE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { dir: path, source }),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| StoreError::Open {
            store: path.display().to_string(),
            reason: format!("not a store file: {e}"),
        })
    }
}

/// Connection parameters that hold a secret, in a URL's query or a `key=value` string.
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A store URL without its secrets, for messages and `store.json`: the password of
/// `user:secret@` and `password=` parameters are left out (the URL is parsed: an `@` in the
/// password or the query does not move the host). Text that is not a URL keeps only what
/// precedes its first `:`, unless it is `key=value` words, whose secrets are left out.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        if url.contains('=') {
            let kept: Vec<&str> = url.split_whitespace().filter(|word| !is_secret_parameter(word)).collect();
            return kept.join(" ");
        }
        return url.split_once(':').map_or_else(|| "(not a URL)".to_string(), |(scheme, _)| format!("{scheme}:…"));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            format!("{}@{host}", credentials.split_once(':').map_or(credentials, |(user, _)| user))
        }
        None => authority.to_string(),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
    let kept: Vec<&str> = query.split('&').filter(|p| !p.is_empty() && !is_secret_parameter(p)).collect();
    let mut redacted = format!("{scheme}://{authority}{path}");
    if !kept.is_empty() {
        redacted.push('?');
        redacted.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        redacted.push('#');
        redacted.push_str(fragment);
    }
    redacted
}

fn is_secret_parameter(parameter: &str) -> bool {
    let key = parameter.split_once('=').map_or(parameter, |(k, _)| k);
    SECRET_PARAMETERS.iter().any(|secret| key.eq_ignore_ascii_case(secret))
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// Opens the store of an existing or new run directory: PostgreSQL when the directory
    /// has a `store.json` (at `url`, else `MSH_STORE`, else the URL it was created with),
    /// otherwise LMDB in `RUN_DIR/store`.
    pub fn open(run_dir: &Path) -> Result<Self, StoreError> {
        Self::open_at(run_dir, None)
    }

    /// Like `open`; with `url`, the run is kept in that PostgreSQL database (created
    /// there on first use). A run directory that keeps its trials in LMDB cannot move.
    pub fn open_at(run_dir: &Path, url: Option<&str>) -> Result<Self, StoreError> {
        let file = StoreFile::read(run_dir)?;
        // A run kept in PostgreSQL: the URL given, else `MSH_STORE`, else the one it was
        // created with. `MSH_STORE` alone never moves a new run there (`msh run` passes it).
        let url = match (url, &file) {
            (Some(url), _) => url.to_string(),
            (None, Some(file)) => {
                std::env::var(STORE_ENV).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| file.url.clone())
            }
            (None, None) => {
                let backend = Backend::Lmdb(lmdb::Lmdb::open(run_dir)?);
                return Ok(Self { name: run_dir.join(STORE_DIR).display().to_string(), backend });
            }
        };
        if !is_postgres_url(&url) {
            return Err(StoreError::Open {
                store: redact_url(&url),
                reason: "not a store URL: msh keeps trials in LMDB (the default) or at postgres://USER@HOST/DB".into(),
            });
        }
        if file.is_none() && lmdb::Lmdb::exists(run_dir) {
            return Err(StoreError::Open {
                store: redact_url(&url),
                reason: format!(
                    "run directory {} keeps its trials in LMDB; start a new run directory to use PostgreSQL",
                    run_dir.display()
                ),
            });
        }
        let new = file.is_none();
        let file = file.unwrap_or_else(|| {
            let name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
            StoreFile { run: format!("{name}-{:016x}", random_u64()), url: redact_url(&url) }
        });
        let name = format!("{} run {}", redact_url(&url), file.run);
        let backend = Backend::Postgres(postgres::Postgres::open(&url, &file.run, &name)?);
        // Written once the database answered, so that a wrong URL leaves nothing behind.
        if new {
            std::fs::create_dir_all(run_dir).map_err(|source| StoreError::Io { dir: run_dir.into(), source })?;
            let json = serde_json::to_vec_pretty(&file).expect("store files serialise");
            let path = run_dir.join(STORE_FILE);
            msh_io::atomic_file::write_atomic(&path, &json).map_err(|source| StoreError::Io { dir: path, source })?;
        }
        Ok(Self { backend, name })
    }

    /// Whether `run_dir` holds a run (an LMDB store or a `store.json`).
    pub fn exists(run_dir: &Path) -> bool {
        lmdb::Lmdb::exists(run_dir) || run_dir.join(STORE_FILE).is_file()
    }

    /// The store as messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `lmdb` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Lmdb(_) => "lmdb",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Runs `f` in one write transaction, committed when it returns `Ok`. Write
    /// transactions of one run are serialised (LMDB's writer lock; an advisory lock on
    /// PostgreSQL), so what `f` reads stays true until it commits.
    pub fn write<T, E: From<StoreError>>(&self, mut f: impl FnMut(&mut Txn<'_>) -> Result<T, E>) -> Result<T, E> {
        let name = self.name.as_str();
        let body = |records: &mut dyn Records| f(&mut Txn { records, name });
        match &self.backend {
            Backend::Lmdb(b) => b.write(body),
            Backend::Postgres(b) => b.write(body),
        }
    }

    /// Reads in one consistent snapshot.
    fn read<T>(&self, f: impl Fn(&View<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let name = self.name.as_str();
        let body = |records: &dyn Records| f(&View { records, name });
        match &self.backend {
            Backend::Lmdb(b) => b.read(body),
            Backend::Postgres(b) => b.read(body),
        }
    }

    pub fn run_meta(&self) -> Result<Option<RunMeta>, StoreError> {
        self.read(|v| v.run_meta())
    }

    pub fn stages(&self) -> Result<Vec<StageRecord>, StoreError> {
        self.read(|v| v.stages())
    }

    pub fn stage(&self, name: &str) -> Result<Option<StageRecord>, StoreError> {
        self.read(|v| v.stage(name))
    }

    pub fn trial(&self, id: u64) -> Result<TrialRecord, StoreError> {
        self.read(|v| v.trial(id))
    }

    /// Every trial, by id.
    pub fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        self.read(|v| v.all(Table::Trials))
    }

    pub fn events(&self) -> Result<Vec<Event>, StoreError> {
        self.read(|v| v.all(Table::Events))
    }

    /// The last `n` events of the log, oldest first (without reading the rest).
    pub fn last_events(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        self.read(|v| v.last_events(n))
    }

    /// Hands every trial to `f`, by id, one at a time: what a reader of a large run holds
    /// is one trial, not all of them.
    pub fn each_trial(&self, f: impl FnMut(TrialRecord) -> Result<(), StoreError>) -> Result<(), StoreError> {
        // `read` takes a `Fn` (PostgreSQL may retry a read); the records reach `f` once.
        let f = std::cell::RefCell::new(f);
        self.read(|v| v.each(Table::Trials, &mut |t| (f.borrow_mut())(t)))
    }

    /// The tally of the run's trials by stage and status (`None` for runs created before
    /// msh kept one).
    pub fn tally(&self) -> Result<Option<Tally>, StoreError> {
        self.read(|v| v.tally())
    }

    /// The store's clock now (the one leases are compared against): what views judge a
    /// running trial's lease by.
    pub fn clock(&self) -> Result<f64, StoreError> {
        self.read(|v| Ok(v.records.clock()))
    }

    /// Trials that finished after position `since` of the finish log, and the new position.
    pub fn finished_since(&self, since: u64) -> Result<(Vec<TrialRecord>, u64), StoreError> {
        if let Backend::Postgres(pg) = &self.backend {
            pg.sequence()?;
        }
        self.read(|v| v.finished_since(since))
    }

    /// What early stopping recorded for `stage` at `epoch` (empty when nothing yet).
    pub fn rung(&self, stage: &str, epoch: u32) -> Result<RungRecord, StoreError> {
        self.read(|v| v.rung(stage, epoch))
    }

    /// The latest snapshot of `stage`'s searcher, if one is kept.
    pub fn snapshot(&self, stage: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        self.read(|v| v.snapshot(stage))
    }
}

/// A number that differs between calls and processes (run keys, owner sessions).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(&(STORE_SCHEMA, value)).expect("store records serialise")
}

/// How errors show a key of `table`.
fn key_text(table: Table, key: &[u8]) -> String {
    match (table, <[u8; 8]>::try_from(key)) {
        (Table::Trials | Table::Events | Table::Finished, Ok(k)) => u64::from_be_bytes(k).to_string(),
        (Table::Rungs, _) if key.len() > 5 => {
            let (stage, epoch) = key.split_at(key.len() - 4);
            let epoch = u32::from_be_bytes(epoch.try_into().expect("4 bytes"));
            format!("{} epoch {epoch}", String::from_utf8_lossy(&stage[..stage.len() - 1]))
        }
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}

/// The schema version at the head of an encoded record (a MessagePack array of two whose
/// first item is an unsigned integer), without walking the rest: decoding a record walks
/// it once, not twice.
fn schema_of(bytes: &[u8]) -> Option<u32> {
    let (&array, rest) = bytes.split_first()?;
    if array != 0x92 {
        return None;
    }
    let (&marker, rest) = rest.split_first()?;
    let be = |n: usize| -> Option<u64> { Some(rest.get(..n)?.iter().fold(0u64, |v, &b| v << 8 | b as u64)) };
    let value = match marker {
        0x00..=0x7f => marker as u64,
        0xcc => be(1)?,
        0xcd => be(2)?,
        0xce => be(4)?,
        0xcf => be(8)?,
        _ => return None,
    };
    u32::try_from(value).ok()
}

fn decode<T: DeserializeOwned>(store: &str, table: Table, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        store: store.to_string(),
        table: table.name(),
        key: key_text(table, key),
        reason,
    };
    // The version is read off the record's first bytes; only a record whose head is not
    // `[version, ...]` is walked in full to say what is wrong with it.
    let schema = match schema_of(bytes) {
        Some(schema) => schema,
        None => {
            let (schema, _): (u32, serde::de::IgnoredAny) =
                rmp_serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
            schema
        }
    };
    if schema != STORE_SCHEMA {
        let (store, table, key) = (store.to_string(), table.name(), key_text(table, key));
        return Err(StoreError::Schema { store, table, key, found: schema });
    }
    let (_, value): (u32, T) = rmp_serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(value)
}

/// Decodes `bytes` as each kind of record, under keys of each table's shape (fuzzing);
/// the trial, when they are one.
#[cfg(feature = "fuzzing")]
pub fn decode_every_record(bytes: &[u8]) -> Option<TrialRecord> {
    let store = "fuzz";
    let (id, rung) = (7u64.to_be_bytes(), rung_key("search", 3));
    let _ = decode::<RunMeta>(store, Table::Meta, b"run", bytes);
    let _ = decode::<StageRecord>(store, Table::Stages, b"search", bytes);
    let _ = decode::<RungRecord>(store, Table::Rungs, &rung, bytes);
    let _ = decode::<Event>(store, Table::Events, &id, bytes);
    let _ = decode::<Option<SnapshotRecord>>(store, Table::Snapshots, b"search", bytes);
    decode::<TrialRecord>(store, Table::Trials, &id, bytes).ok()
}

/// One encoded record of each kind (fuzzing's starting inputs).
#[cfg(feature = "fuzzing")]
pub fn record_seeds() -> Vec<Vec<u8>> {
    let mut trial = TrialRecord::new(
        7,
        "search",
        vec![BlockRef { name: "fixed_conv".into(), params: vec![("filters".into(), ParamValue::Int(32))] }],
        vec![("learning_rate".into(), 0.001)],
    );
    trial.losses = vec![0.9, 0.5];
    vec![
        encode(&trial),
        encode(&StageRecord::new("search", "search")),
        encode(&RungRecord::default()),
        encode(&RunMeta {
            data: None,
            workflow_name: "w".into(),
            workflow_path: "w.yaml".into(),
            workflow_text: "name: w".into(),
            created: 1.0,
            msh_version: "0.1.0".into(),
            plugins: [("core-blocks".to_string(), "ab".repeat(32))].into(),
        }),
    ]
}

/// The key of a stage's early-stopping record for `epoch`.
fn rung_key(stage: &str, epoch: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(stage.len() + 5);
    key.extend_from_slice(stage.as_bytes());
    key.push(0);
    key.extend_from_slice(&epoch.to_be_bytes());
    key
}

const RUN_KEY: &[u8] = b"run";
/// The counters (`Records::bump`): trial ids, event and finish-log positions.
const NEXT_TRIAL: &str = "next_trial";
const NEXT_EVENT: &str = "next_event";
const NEXT_FINISHED: &str = "next_finished";
const COUNTERS: [&str; 3] = [NEXT_TRIAL, NEXT_EVENT, NEXT_FINISHED];

/// A search stage's queue where a backend keeps it apart from the stage record.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Requeued trials, next first.
    pub pending: Vec<u64>,
    pub in_flight: Vec<u64>,
    pub reserved: Vec<Reservation>,
    pub finished: u64,
    /// Proposals refused while slots were held.
    pub rejected: u64,
}
/// The `Tally` of a run created since it was introduced.
const TALLY_KEY: &[u8] = b"tally";

/// Typed reads over a transaction's records (a read snapshot, or a write transaction).
/// The threads that decode large tables. Not rayon's global pool: trainers train there
/// and call the store from it (early stopping records each epoch), so a transaction that
/// waited for that pool while holding the write lock (a lease renewal reading the stages)
/// would wait for a trainer that waits for the lock.
fn decoders() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("msh-store-decode-{i}"))
            .build()
            .expect("the store's decoding threads start")
    })
}

struct View<'a> {
    records: &'a dyn Records,
    name: &'a str,
}

impl View<'_> {
    fn get<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.records.get(table, key)? {
            Some(bytes) => decode(self.name, table, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned + Send>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        use rayon::prelude::*;
        // Decoding is most of the cost of reading a large table: records are copied out in
        // chunks, and each large chunk is decoded on every core, by the store's own pool.
        const CHUNK: usize = 4096;
        let decode_all = |chunk: &[(Vec<u8>, Vec<u8>)]| -> Result<Vec<T>, StoreError> {
            let one = |(key, value): &(Vec<u8>, Vec<u8>)| decode(self.name, table, key, value);
            if chunk.len() < 256 {
                return chunk.iter().map(one).collect();
            }
            decoders().install(|| chunk.par_iter().map(one).collect())
        };
        let (mut out, mut chunk) = (Vec::new(), Vec::with_capacity(CHUNK));
        self.records.each(table, &mut |key, value| {
            chunk.push((key.to_vec(), value.to_vec()));
            if chunk.len() == CHUNK {
                out.extend(decode_all(&chunk)?);
                chunk.clear();
            }
            Ok(())
        })?;
        out.extend(decode_all(&chunk)?);
        Ok(out)
    }

    /// Decodes the records of `table` one at a time, in key order, handing each to `f`.
    fn each<T: DeserializeOwned>(
        &self,
        table: Table,
        f: &mut dyn FnMut(T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.records.each(table, &mut |key, value| f(decode(self.name, table, key, value)?))
    }

    fn run_meta(&self) -> Result<Option<RunMeta>, StoreError> {
        self.get(Table::Meta, RUN_KEY)
    }

    fn stage(&self, name: &str) -> Result<Option<StageRecord>, StoreError> {
        self.get::<StageRecord>(Table::Stages, name.as_bytes())?.map(|s| self.with_queue(s)).transpose()
    }

    fn stages(&self) -> Result<Vec<StageRecord>, StoreError> {
        self.all(Table::Stages)?.into_iter().map(|s| self.with_queue(s)).collect()
    }

    /// The stage with its queue, where the backend keeps that apart.
    fn with_queue(&self, mut stage: StageRecord) -> Result<StageRecord, StoreError> {
        if let Some(queue) = self.records.queue(&stage.name)? {
            stage.running = queue.in_flight.len() as u64;
            (stage.pending, stage.in_flight, stage.reserved) = (queue.pending, queue.in_flight, queue.reserved);
            stage.finished_trials = queue.finished;
            stage.rejected_proposals += queue.rejected;
        }
        Ok(stage)
    }

    fn trial(&self, id: u64) -> Result<TrialRecord, StoreError> {
        self.get(Table::Trials, &id.to_be_bytes())?.ok_or_else(|| StoreError::NoTrial { id, store: self.name.into() })
    }

    fn tally(&self) -> Result<Option<Tally>, StoreError> {
        self.get(Table::Meta, TALLY_KEY)
    }

    /// The last `n` events, oldest first.
    fn last_events(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        let rows = self.records.last_events(n)?;
        rows.iter().map(|(key, value)| decode(self.name, Table::Events, key, value)).collect()
    }

    fn rung(&self, stage: &str, epoch: u32) -> Result<RungRecord, StoreError> {
        Ok(self.get(Table::Rungs, &rung_key(stage, epoch))?.unwrap_or_default())
    }

    fn finished_since(&self, since: u64) -> Result<(Vec<TrialRecord>, u64), StoreError> {
        let end = self.records.counter(NEXT_FINISHED)?;
        let mut out = Vec::new();
        for position in since..end {
            if let Some(id) = self.get::<u64>(Table::Finished, &position.to_be_bytes())? {
                out.push(self.trial(id)?);
            }
        }
        Ok((out, end))
    }

    fn snapshot(&self, stage: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        Ok(self.get::<Option<SnapshotRecord>>(Table::Snapshots, stage.as_bytes())?.flatten())
    }
}

/// A write transaction (see `Store::write`).
pub struct Txn<'a> {
    records: &'a mut dyn Records,
    name: &'a str,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn").field("store", &self.name).finish()
    }
}

impl Txn<'_> {
    fn view(&self) -> View<'_> {
        View { records: &*self.records, name: self.name }
    }

    fn put<T: Serialize>(&mut self, table: Table, key: &[u8], value: &T) -> Result<(), StoreError> {
        self.records.put(table, key, &encode(value))
    }

    /// The store's clock when this transaction began (leases are compared against it).
    pub fn clock(&self) -> f64 {
        self.records.clock()
    }

    pub fn run_meta(&self) -> Result<Option<RunMeta>, StoreError> {
        self.view().run_meta()
    }

    /// Writes the run record; a new run (no record, no trial yet) starts its tally.
    pub fn put_run_meta(&mut self, meta: &RunMeta) -> Result<(), StoreError> {
        let new = self.run_meta()?.is_none() && self.records.counter(NEXT_TRIAL)? == 0;
        if new && self.records.keeps_tally() && self.view().tally()?.is_none() {
            self.put(Table::Meta, TALLY_KEY, &Tally::default())?;
        }
        self.put(Table::Meta, RUN_KEY, meta)
    }

    /// The stage's record as stored: on PostgreSQL its queue and counts are the slots'
    /// (`Store::stage` has them).
    pub fn stage(&self, name: &str) -> Result<Option<StageRecord>, StoreError> {
        self.view().get(Table::Stages, name.as_bytes())
    }

    /// A stage that recovery has written (every stage of the workflow).
    pub fn known_stage(&self, name: &str) -> Result<StageRecord, StoreError> {
        self.stage(name)?.ok_or_else(|| StoreError::NoStage { stage: name.into(), store: self.name.into() })
    }

    /// The stages' records as stored (see `stage`).
    pub fn stages(&self) -> Result<Vec<StageRecord>, StoreError> {
        self.view().all(Table::Stages)
    }

    pub fn put_stage(&mut self, stage: &StageRecord) -> Result<(), StoreError> {
        self.put(Table::Stages, stage.name.as_bytes(), stage)
    }

    pub fn trial(&self, id: u64) -> Result<TrialRecord, StoreError> {
        self.view().trial(id)
    }

    /// Writes a trial; the first time it reaches a final status it joins the finish log.
    pub fn put_trial(&mut self, trial: &TrialRecord) -> Result<(), StoreError> {
        let before = self.view().get::<TrialRecord>(Table::Trials, &trial.id.to_be_bytes())?;
        if let Some(mut tally) = self.view().tally()? {
            tally.replace(before.as_ref(), trial);
            self.put(Table::Meta, TALLY_KEY, &tally)?;
        }
        let was_finished = before.is_some_and(|t| t.status.is_finished());
        self.put(Table::Trials, &trial.id.to_be_bytes(), trial)?;
        if trial.status.is_finished() && !was_finished {
            let position = self.records.bump(NEXT_FINISHED)?;
            self.put(Table::Finished, &position.to_be_bytes(), &trial.id)?;
        }
        Ok(())
    }

    /// What early stopping recorded for `stage` at `epoch` (empty when nothing yet).
    pub fn rung(&self, stage: &str, epoch: u32) -> Result<RungRecord, StoreError> {
        self.view().rung(stage, epoch)
    }

    /// The latest snapshot of `stage`'s searcher, if one is kept.
    pub fn snapshot(&self, stage: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        self.view().snapshot(stage)
    }

    /// Keeps `snapshot` as `stage`'s, unless the one kept covers more of the finish log
    /// (another process saved it later). `true` when kept.
    pub fn put_snapshot(&mut self, stage: &str, snapshot: &SnapshotRecord) -> Result<bool, StoreError> {
        if self.snapshot(stage)?.is_some_and(|kept| kept.position > snapshot.position) {
            return Ok(false);
        }
        self.put(Table::Snapshots, stage.as_bytes(), &Some(snapshot))?;
        Ok(true)
    }

    /// Drops `stage`'s snapshot: the next resume replays every trial.
    pub fn forget_snapshot(&mut self, stage: &str) -> Result<(), StoreError> {
        self.put(Table::Snapshots, stage.as_bytes(), &None::<SnapshotRecord>)
    }

    pub fn put_rung(&mut self, stage: &str, epoch: u32, rung: &RungRecord) -> Result<(), StoreError> {
        self.put(Table::Rungs, &rung_key(stage, epoch), rung)
    }

    /// A fresh trial id.
    pub fn next_trial_id(&mut self) -> Result<u64, StoreError> {
        self.records.bump(NEXT_TRIAL)
    }

    /// Every trial, by id (for recovery, which runs once per start).
    pub fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        self.view().all(Table::Trials)
    }

    pub fn log(
        &mut self,
        stage: Option<&str>,
        trial: Option<u64>,
        message: impl Into<String>,
    ) -> Result<(), StoreError> {
        let seq = self.records.bump(NEXT_EVENT)?;
        let event = Event { time: self.clock(), stage: stage.map(str::to_string), trial, message: message.into() };
        self.put(Table::Events, &seq.to_be_bytes(), &event)
    }

    /// Writes raw bytes as a record (tests of corrupt and future records).
    #[doc(hidden)]
    pub fn put_raw_trial(&mut self, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.records.put(Table::Trials, &id.to_be_bytes(), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact_url("postgres://msh:s3cr@t@db.example:5432/runs"), "postgres://msh@db.example:5432/runs");
        assert_eq!(redact_url("postgres://msh@db/runs"), "postgres://msh@db/runs");
        assert_eq!(redact_url("postgres://db/runs"), "postgres://db/runs");
        // Every credential form: a query parameter, an `@` in the query, a mistyped scheme,
        // key=value words.
        assert_eq!(
            redact_url("postgres://msh@db:5432/runs?sslmode=disable&password=s3cret&application_name=a@b"),
            "postgres://msh@db:5432/runs?sslmode=disable&application_name=a@b"
        );
        assert_eq!(redact_url("postgres://db/runs?x=1@evil.example"), "postgres://db/runs?x=1@evil.example");
        assert_eq!(redact_url("postgres://u:p@ss@db/runs?PASSWORD=x"), "postgres://u@db/runs");
        assert_eq!(redact_url("postgress:u:s3cret@db/runs"), "postgress:…");
        assert_eq!(redact_url("host=db user=msh password=s3cret"), "host=db user=msh");
        assert_eq!(redact_url("localhost"), "(not a URL)");
    }

    #[test]
    fn the_schema_is_read_off_a_records_head() {
        let record = encode(&TrialRecord::new(7, "search", vec![], vec![]));
        assert_eq!(schema_of(&record), Some(STORE_SCHEMA));
        let future = rmp_serde::to_vec_named(&(70_000u32, "x")).unwrap();
        assert_eq!(schema_of(&future), Some(70_000));
        // Anything else is left to the full decode, which says what is wrong.
        assert_eq!(schema_of(b"\xc1 not messagepack"), None);
        assert_eq!(schema_of(&[0x92]), None);
        assert_eq!(schema_of(&[0x92, 0xce, 0, 1]), None);
    }

    #[test]
    fn keys_show_as_their_table_reads_them() {
        assert_eq!(key_text(Table::Trials, &7u64.to_be_bytes()), "7");
        assert_eq!(key_text(Table::Rungs, &rung_key("search", 3)), "search epoch 3");
        assert_eq!(key_text(Table::Stages, b"search"), "search");
    }
}
