//! The embedded backend: an LMDB environment in `RUN_DIR/store`, one named database per
//! table. LMDB is multi-process: processes on one machine share a run, and its single
//! writer lock serialises write transactions.

use std::path::Path;

use lmdb::{Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags};

use super::{Records, STORE_DIR, StoreError, Table, Visit};

/// Address space reserved for the map; the file grows only as data is written.
const MAP_SIZE: usize = 64 << 30;

pub struct Lmdb {
    env: Environment,
    tables: [Database; Table::ALL.len()],
    name: String,
}

impl Lmdb {
    pub fn open(run_dir: &Path) -> Result<Self, StoreError> {
        let dir = run_dir.join(STORE_DIR);
        let name = dir.display().to_string();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { dir: dir.clone(), source })?;
        let lmdb_err = |source| StoreError::Lmdb { store: name.clone(), source };
        // NO_META_SYNC: one fsync per commit instead of two. A process crash loses nothing;
        // an operating-system crash may undo the last transaction, never corrupt the store.
        let env = Environment::new()
            .set_flags(EnvironmentFlags::NO_META_SYNC)
            .set_max_dbs(8)
            .set_map_size(MAP_SIZE)
            .open(&dir)
            .map_err(lmdb_err)?;
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            tables.push(env.create_db(Some(table.name()), DatabaseFlags::empty()).map_err(lmdb_err)?);
        }
        let tables = tables.try_into().expect("one database per table");
        Ok(Self { env, tables, name })
    }

    pub fn exists(run_dir: &Path) -> bool {
        run_dir.join(STORE_DIR).join("data.mdb").is_file()
    }

    fn error(&self, source: lmdb::Error) -> StoreError {
        StoreError::Lmdb { store: self.name.clone(), source }
    }

    pub fn write<T, E: From<StoreError>>(&self, f: impl FnOnce(&mut dyn Records) -> Result<T, E>) -> Result<T, E> {
        let txn = self.env.begin_rw_txn().map_err(|e| self.error(e))?;
        let mut records = Txn { txn, store: self, clock: super::now() };
        let value = f(&mut records)?;
        records.txn.commit().map_err(|e| self.error(e))?;
        Ok(value)
    }

    pub fn read<T>(&self, f: impl FnOnce(&dyn Records) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.env.begin_ro_txn().map_err(|e| self.error(e))?;
        f(&Txn { txn, store: self, clock: super::now() })
    }
}

struct Txn<'a, T: Transaction> {
    txn: T,
    store: &'a Lmdb,
    clock: f64,
}

impl<T: Transaction> Txn<'_, T> {
    fn db(&self, table: Table) -> Database {
        self.store.tables[table as usize]
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.txn.get(self.db(table), &key) {
            Ok(value) => Ok(Some(value.to_vec())),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(self.store.error(e)),
        }
    }

    fn scan(&self, table: Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        self.each(table, &mut |key, value| {
            out.push((key.to_vec(), value.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Records as they lie in the map: a reader of every trial holds one at a time.
    fn each(&self, table: Table, f: &mut Visit<'_>) -> Result<(), StoreError> {
        let mut cursor = self.txn.open_ro_cursor(self.db(table)).map_err(|e| self.store.error(e))?;
        for item in cursor.iter_start() {
            let (key, value) = item.map_err(|e| self.store.error(e))?;
            f(key, value)?;
        }
        Ok(())
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        match self.get(Table::Meta, name.as_bytes())? {
            Some(bytes) => super::decode(&self.store.name, Table::Meta, name.as_bytes(), &bytes),
            None => Ok(0),
        }
    }
}

impl Records for Txn<'_, lmdb::RwTransaction<'_>> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Txn::get(self, table, key)
    }
    fn scan(&self, table: Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Txn::scan(self, table)
    }
    fn each(&self, table: Table, f: &mut Visit<'_>) -> Result<(), StoreError> {
        Txn::each(self, table, f)
    }
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let db = self.db(table);
        self.txn.put(db, &key, &value, WriteFlags::empty()).map_err(|e| self.store.error(e))
    }
    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Txn::counter(self, name)
    }
    fn bump(&mut self, name: &str) -> Result<u64, StoreError> {
        let value = Txn::counter(self, name)?;
        self.put(Table::Meta, name.as_bytes(), &super::encode(&(value + 1)))?;
        Ok(value)
    }
    fn clock(&self) -> f64 {
        self.clock
    }
}

impl Records for Txn<'_, lmdb::RoTransaction<'_>> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Txn::get(self, table, key)
    }
    fn scan(&self, table: Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Txn::scan(self, table)
    }
    fn each(&self, table: Table, f: &mut Visit<'_>) -> Result<(), StoreError> {
        Txn::each(self, table, f)
    }
    fn put(&mut self, _: Table, _: &[u8], _: &[u8]) -> Result<(), StoreError> {
        unreachable!("`Store::read` hands out `&dyn Records`")
    }
    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Txn::counter(self, name)
    }
    fn bump(&mut self, _: &str) -> Result<u64, StoreError> {
        unreachable!("`Store::read` hands out `&dyn Records`")
    }
    fn clock(&self) -> f64 {
        self.clock
    }
}
