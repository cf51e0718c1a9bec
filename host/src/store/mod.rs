//! The trial store: an LMDB environment in the run directory. Run metadata, stages,
//! trials, an event log and early stopping's values are MessagePack records behind a
//! schema version. LMDB is multi-process: several `msh` processes can work on one run,
//! each change is one transaction.

mod records;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use lmdb::{Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, RwTransaction, Transaction, WriteFlags};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use records::{
    BlockRef, Event, Owner, ParamValue, RunMeta, RungRecord, StageRecord, StageState, TrialRecord, TrialStatus,
};

/// Bumped when a record changes incompatibly.
pub const STORE_SCHEMA: u32 = 1;
/// The directory inside a run directory that holds the LMDB files.
pub const STORE_DIR: &str = "store";
/// Address space reserved for the map; the file grows only as data is written.
const MAP_SIZE: usize = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {}: {source}", dir.display())]
    Lmdb { dir: PathBuf, source: lmdb::Error },
    #[error("cannot create store {}: {source}", dir.display())]
    Io { dir: PathBuf, source: std::io::Error },
    #[error("store {}: record {key} of `{table}` is corrupt: {reason}", dir.display())]
    Corrupt { dir: PathBuf, table: &'static str, key: String, reason: String },
    #[error("store {}: record {key} of `{table}` has schema version {found}; this msh reads version {STORE_SCHEMA}", dir.display())]
    Schema { dir: PathBuf, table: &'static str, key: String, found: u32 },
    #[error("store {}: no trial {id}", dir.display())]
    NoTrial { id: u64, dir: PathBuf },
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[derive(Debug, Clone, Copy)]
struct Tables {
    meta: Database,
    stages: Database,
    trials: Database,
    events: Database,
    /// Finish order -> trial id, so a reader can fetch only what finished since it last looked.
    finished: Database,
    /// Early stopping's values: stage name, 0, epoch (u32 big-endian) -> `RungRecord`.
    rungs: Database,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    env: Environment,
    tables: Tables,
    dir: PathBuf,
}

const RUN_KEY: &[u8] = b"run";
const NEXT_TRIAL: &[u8] = b"next_trial";
const NEXT_EVENT: &[u8] = b"next_event";
const NEXT_FINISHED: &[u8] = b"next_finished";

impl Store {
    /// Opens (creating if needed) the store of the run directory `run_dir`.
    pub fn open(run_dir: &Path) -> Result<Self, StoreError> {
        let dir = run_dir.join(STORE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { dir: dir.clone(), source })?;
        let lmdb_err = |source| StoreError::Lmdb { dir: dir.clone(), source };
        // NO_META_SYNC: one fsync per commit instead of two. A process crash loses nothing;
        // an operating-system crash may undo the last transaction, never corrupt the store.
        let env = Environment::new()
            .set_flags(EnvironmentFlags::NO_META_SYNC)
            .set_max_dbs(8)
            .set_map_size(MAP_SIZE)
            .open(&dir)
            .map_err(lmdb_err)?;
        let create = |name| env.create_db(Some(name), DatabaseFlags::empty()).map_err(lmdb_err);
        let tables = Tables {
            meta: create("meta")?,
            stages: create("stages")?,
            trials: create("trials")?,
            events: create("events")?,
            finished: create("finished")?,
            rungs: create("rungs")?,
        };
        Ok(Self { env, tables, dir })
    }

    /// Whether `run_dir` holds a store.
    pub fn exists(run_dir: &Path) -> bool {
        run_dir.join(STORE_DIR).join("data.mdb").is_file()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lmdb(&self, source: lmdb::Error) -> StoreError {
        StoreError::Lmdb { dir: self.dir.clone(), source }
    }

    /// Runs `f` in one write transaction, committed when it returns `Ok`.
    pub fn write<T, E: From<StoreError>>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>) -> Result<T, E> {
        let txn = self.env.begin_rw_txn().map_err(|e| self.lmdb(e))?;
        let mut txn = Txn { txn, store: self };
        let value = f(&mut txn)?;
        txn.txn.commit().map_err(|e| self.lmdb(e))?;
        Ok(value)
    }

    /// Reads in one consistent snapshot.
    fn read<T>(&self, f: impl FnOnce(&Snapshot<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.lmdb(e))?;
        f(&Snapshot { txn: &txn, store: self })
    }

    pub fn run_meta(&self) -> Result<Option<RunMeta>, StoreError> {
        self.read(|s| s.get(self.tables.meta, "meta", RUN_KEY))
    }

    pub fn stages(&self) -> Result<Vec<StageRecord>, StoreError> {
        self.read(|s| all(s.txn, self, self.tables.stages, "stages"))
    }

    pub fn stage(&self, name: &str) -> Result<Option<StageRecord>, StoreError> {
        self.read(|s| s.get(self.tables.stages, "stages", name.as_bytes()))
    }

    pub fn trial(&self, id: u64) -> Result<TrialRecord, StoreError> {
        self.read(|s| s.trial(id))
    }

    /// Every trial, by id.
    pub fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        self.read(|s| all(s.txn, self, self.tables.trials, "trials"))
    }

    pub fn events(&self) -> Result<Vec<Event>, StoreError> {
        self.read(|s| all(s.txn, self, self.tables.events, "events"))
    }

    /// Trials that finished after position `since` of the finish log, and the new position.
    pub fn finished_since(&self, since: u64) -> Result<(Vec<TrialRecord>, u64), StoreError> {
        self.read(|s| Reader::finished_since(s, since))
    }

    /// What early stopping recorded for `stage` at `epoch` (empty when nothing yet).
    pub fn rung(&self, stage: &str, epoch: u32) -> Result<RungRecord, StoreError> {
        self.read(|s| Ok(s.get(self.tables.rungs, "rungs", &rung_key(stage, epoch))?.unwrap_or_default()))
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(&(STORE_SCHEMA, value)).expect("store records serialise")
}

fn decode<T: DeserializeOwned>(dir: &Path, table: &'static str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let key_text = || match <[u8; 8]>::try_from(key) {
        Ok(k) if table != "meta" && table != "stages" && table != "rungs" => u64::from_be_bytes(k).to_string(),
        _ if table == "rungs" && key.len() > 5 => {
            let (stage, epoch) = key.split_at(key.len() - 4);
            let epoch = u32::from_be_bytes(epoch.try_into().expect("4 bytes"));
            format!("{} epoch {epoch}", String::from_utf8_lossy(&stage[..stage.len() - 1]))
        }
        _ => String::from_utf8_lossy(key).into_owned(),
    };
    let corrupt = |reason: String| StoreError::Corrupt { dir: dir.to_path_buf(), table, key: key_text(), reason };
    let (schema, _): (u32, serde::de::IgnoredAny) = rmp_serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if schema != STORE_SCHEMA {
        return Err(StoreError::Schema { dir: dir.to_path_buf(), table, key: key_text(), found: schema });
    }
    let (_, value): (u32, T) = rmp_serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(value)
}

/// Decodes `bytes` as each kind of record, under keys of each table's shape (fuzzing).
pub(crate) fn decode_every_record(bytes: &[u8]) {
    let dir = Path::new("fuzz");
    let (id, rung) = (7u64.to_be_bytes(), rung_key("search", 3));
    let _ = decode::<RunMeta>(dir, "meta", b"run", bytes);
    let _ = decode::<StageRecord>(dir, "stages", b"search", bytes);
    let _ = decode::<RungRecord>(dir, "rungs", &rung, bytes);
    let _ = decode::<Event>(dir, "events", &id, bytes);
    if let Ok(trial) = decode::<TrialRecord>(dir, "trials", &id, bytes) {
        let _ = trial.to_plugin();
    }
}

/// One encoded record of each kind (fuzzing's starting inputs).
pub(crate) fn record_seeds() -> Vec<Vec<u8>> {
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

/// A read-only transaction (see `Store::read`).
struct Snapshot<'a> {
    txn: &'a lmdb::RoTransaction<'a>,
    store: &'a Store,
}

trait Reader {
    fn raw(&self, db: Database, key: &[u8]) -> Result<Option<&[u8]>, lmdb::Error>;
    fn store(&self) -> &Store;

    fn get<T: DeserializeOwned>(&self, db: Database, table: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.raw(db, key).map_err(|e| self.store().lmdb(e))? {
            Some(bytes) => decode(&self.store().dir, table, key, bytes).map(Some),
            None => Ok(None),
        }
    }

    fn trial(&self, id: u64) -> Result<TrialRecord, StoreError> {
        self.get(self.store().tables.trials, "trials", &id.to_be_bytes())?
            .ok_or_else(|| StoreError::NoTrial { id, dir: self.store().dir.clone() })
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self.get::<u64>(self.store().tables.meta, "meta", key)?.unwrap_or(0))
    }

    fn finished_since(&self, since: u64) -> Result<(Vec<TrialRecord>, u64), StoreError> {
        let end = self.counter(NEXT_FINISHED)?;
        let mut out = Vec::new();
        for position in since..end {
            if let Some(id) = self.get::<u64>(self.store().tables.finished, "finished", &position.to_be_bytes())? {
                out.push(self.trial(id)?);
            }
        }
        Ok((out, end))
    }
}

fn not_found_is_none(r: Result<&[u8], lmdb::Error>) -> Result<Option<&[u8]>, lmdb::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Reader for Snapshot<'_> {
    fn raw(&self, db: Database, key: &[u8]) -> Result<Option<&[u8]>, lmdb::Error> {
        not_found_is_none(self.txn.get(db, &key))
    }
    fn store(&self) -> &Store {
        self.store
    }
}

/// Every record of a table, in key order.
fn all<T: DeserializeOwned>(
    txn: &impl Transaction,
    store: &Store,
    db: Database,
    table: &'static str,
) -> Result<Vec<T>, StoreError> {
    let mut cursor = txn.open_ro_cursor(db).map_err(|e| store.lmdb(e))?;
    let mut out = Vec::new();
    for item in cursor.iter_start() {
        let (key, value) = item.map_err(|e| store.lmdb(e))?;
        out.push(decode(&store.dir, table, key, value)?);
    }
    Ok(out)
}

/// A write transaction (see `Store::write`).
pub struct Txn<'a> {
    txn: RwTransaction<'a>,
    store: &'a Store,
}

impl Reader for Txn<'_> {
    fn raw(&self, db: Database, key: &[u8]) -> Result<Option<&[u8]>, lmdb::Error> {
        not_found_is_none(self.txn.get(db, &key))
    }
    fn store(&self) -> &Store {
        self.store
    }
}

impl Txn<'_> {
    fn put<T: Serialize>(&mut self, db: Database, key: &[u8], value: &T) -> Result<(), StoreError> {
        self.txn.put(db, &key, &encode(value), WriteFlags::empty()).map_err(|e| self.store.lmdb(e))
    }

    fn bump(&mut self, key: &[u8]) -> Result<u64, StoreError> {
        let value = self.counter(key)?;
        self.put(self.store.tables.meta, key, &(value + 1))?;
        Ok(value)
    }

    pub fn run_meta(&self) -> Result<Option<RunMeta>, StoreError> {
        Reader::get(self, self.store.tables.meta, "meta", RUN_KEY)
    }

    pub fn put_run_meta(&mut self, meta: &RunMeta) -> Result<(), StoreError> {
        self.put(self.store.tables.meta, RUN_KEY, meta)
    }

    pub fn stage(&self, name: &str) -> Result<Option<StageRecord>, StoreError> {
        Reader::get(self, self.store.tables.stages, "stages", name.as_bytes())
    }

    pub fn put_stage(&mut self, stage: &StageRecord) -> Result<(), StoreError> {
        self.put(self.store.tables.stages, stage.name.as_bytes(), stage)
    }

    pub fn trial(&self, id: u64) -> Result<TrialRecord, StoreError> {
        Reader::trial(self, id)
    }

    /// Writes a trial; the first time it reaches a final status it joins the finish log.
    pub fn put_trial(&mut self, trial: &TrialRecord) -> Result<(), StoreError> {
        let before = Reader::get::<TrialRecord>(self, self.store.tables.trials, "trials", &trial.id.to_be_bytes())?;
        let was_finished = before.is_some_and(|t| t.status.is_finished());
        self.put(self.store.tables.trials, &trial.id.to_be_bytes(), trial)?;
        if trial.status.is_finished() && !was_finished {
            let position = self.bump(NEXT_FINISHED)?;
            self.put(self.store.tables.finished, &position.to_be_bytes(), &trial.id)?;
        }
        Ok(())
    }

    /// Trials that finished after position `since` of the finish log, and the new position.
    pub fn finished_since(&self, since: u64) -> Result<(Vec<TrialRecord>, u64), StoreError> {
        Reader::finished_since(self, since)
    }

    /// What early stopping recorded for `stage` at `epoch` (empty when nothing yet).
    pub fn rung(&self, stage: &str, epoch: u32) -> Result<RungRecord, StoreError> {
        Ok(Reader::get(self, self.store.tables.rungs, "rungs", &rung_key(stage, epoch))?.unwrap_or_default())
    }

    pub fn put_rung(&mut self, stage: &str, epoch: u32, rung: &RungRecord) -> Result<(), StoreError> {
        self.put(self.store.tables.rungs, &rung_key(stage, epoch), rung)
    }

    /// A fresh trial id.
    pub fn next_trial_id(&mut self) -> Result<u64, StoreError> {
        self.bump(NEXT_TRIAL)
    }

    /// Every trial, by id (for recovery, which runs once per start).
    pub fn trials(&self) -> Result<Vec<TrialRecord>, StoreError> {
        all(&self.txn, self.store, self.store.tables.trials, "trials")
    }

    pub fn log(
        &mut self,
        stage: Option<&str>,
        trial: Option<u64>,
        message: impl Into<String>,
    ) -> Result<(), StoreError> {
        let seq = self.bump(NEXT_EVENT)?;
        let event = Event { time: now(), stage: stage.map(str::to_string), trial, message: message.into() };
        self.put(self.store.tables.events, &seq.to_be_bytes(), &event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("msh-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn trial(id: u64, status: TrialStatus) -> TrialRecord {
        let architecture = vec![BlockRef { name: "dense".into(), params: vec![("units".into(), ParamValue::Int(8))] }];
        TrialRecord { status, ..TrialRecord::new(id, "search", architecture, vec![("learning_rate".into(), 0.01)]) }
    }

    #[test]
    fn records_round_trip_and_finish_log_is_incremental() {
        let dir = temp_dir("roundtrip");
        let store = Store::open(&dir).unwrap();
        store
            .write(|t| -> Result<(), StoreError> {
                for _ in 0..3 {
                    let id = t.next_trial_id()?;
                    t.put_trial(&trial(id, TrialStatus::Running))?;
                }
                t.log(Some("search"), Some(0), "started")
            })
            .unwrap();
        store.write(|t| t.put_trial(&trial(1, TrialStatus::Completed))).unwrap();
        let (done, position) = store.finished_since(0).unwrap();
        assert_eq!((done.len(), done[0].id, position), (1, 1, 1));
        // Rewriting a finished trial does not log it twice.
        store.write(|t| t.put_trial(&trial(1, TrialStatus::Completed))).unwrap();
        store.write(|t| t.put_trial(&trial(2, TrialStatus::Failed))).unwrap();
        let (done, position) = store.finished_since(position).unwrap();
        assert_eq!((done.len(), done[0].id, position), (1, 2, 2));
        drop(store);
        let reopened = Store::open(&dir).unwrap();
        assert_eq!(reopened.trials().unwrap().len(), 3);
        let stored = reopened.trial(0).unwrap();
        assert_eq!(stored, TrialRecord { created: stored.created, ..trial(0, TrialStatus::Running) });
        assert_eq!(reopened.events().unwrap()[0].message, "started");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_by_name() {
        let dir = temp_dir("schema");
        let store = Store::open(&dir).unwrap();
        store
            .write(|t| {
                t.txn
                    .put(
                        t.store.tables.trials,
                        &7u64.to_be_bytes(),
                        &rmp_serde::to_vec_named(&(9u32, 0u8)).unwrap(),
                        WriteFlags::empty(),
                    )
                    .map_err(|e| store.lmdb(e))
            })
            .unwrap();
        let err = store.trial(7).unwrap_err().to_string();
        assert!(err.contains("record 7 of `trials` has schema version 9"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
