//! The store: machine properties and the account directory, kept in an
//! embedded redb file so a restart forgets neither. Live state, disks and
//! remote-desktop connections are not kept: agents report them again within
//! seconds, and a stale copy would be worse than none.
//!
//! On disk: `<data dir>/cherry-bridge.redb` with three tables. `meta` maps
//! `"format_version"` to a `u64` (today [`FORMAT_VERSION`]); `machines` and
//! `accounts` map a UUID (as its `u128`) to one JSON record (see `record`).
//! A store whose version is newer than this build knows is refused rather
//! than misread, and so is a file that is damaged or not a store at all.
//!
//! [`Store::open`] reads everything back for the registry before the bridge
//! listens. After that, the registry writes through a [`Journal`]; the writer
//! behind it is described in `journal`.

mod journal;
mod record;

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
    TableError,
};
use tracing::{info, warn};

use crate::account::Account;
use crate::machine::Properties;

pub use journal::{Durable, Journal};
use record::{AccountRecord, MachineRecord};

/// The version of the layout and records this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// The store's file inside the data directory.
pub const FILE_NAME: &str = "cherry-bridge.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION_KEY: &str = "format_version";
const MACHINES: TableDefinition<u128, &[u8]> = TableDefinition::new("machines");
const ACCOUNTS: TableDefinition<u128, &[u8]> = TableDefinition::new("accounts");

/// Memory redb may use to cache pages. The store holds a few kilobytes per
/// machine and is read in full once, so a small cache is plenty.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Why the store cannot be used. Every variant names the file, so an
/// operator knows what to look at.
#[derive(Clone, Debug)]
pub enum StoreError {
    /// The file or its directory cannot be opened or created: permissions,
    /// a missing mount, or another process holding it.
    Open { path: PathBuf, reason: String },
    /// The file is damaged, or is not a cherry-bridge store.
    Corrupt { path: PathBuf, reason: String },
    /// A newer cherry-bridge wrote the file in a format this one cannot read.
    NewerFormat { path: PathBuf, found: u64 },
    /// A commit failed; nothing written since can be acknowledged.
    Write { path: PathBuf, reason: String },
    /// The store was closed, for shutdown.
    Closed { path: PathBuf },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open { path, reason } => {
                write!(f, "cannot open the store {}: {reason}", path.display())
            }
            StoreError::Corrupt { path, reason } => write!(
                f,
                "the store {} is corrupt or not a cherry-bridge store ({reason}); \
                 restore it from a backup, or move it away to start empty",
                path.display()
            ),
            StoreError::NewerFormat { path, found } => write!(
                f,
                "the store {} has format version {found}, newer than version \
                 {FORMAT_VERSION} that this cherry-bridge reads; run the newer \
                 cherry-bridge that wrote it",
                path.display()
            ),
            StoreError::Write { path, reason } => {
                write!(f, "cannot write the store {}: {reason}", path.display())
            }
            StoreError::Closed { path } => write!(f, "the store {} is closed", path.display()),
        }
    }
}

impl std::error::Error for StoreError {}

/// What the store held when it was opened.
#[derive(Debug, Default)]
pub struct Contents {
    pub machines: Vec<Properties>,
    pub accounts: Vec<Account>,
}

/// An open store: the writer thread and the journal that feeds it.
pub struct Store {
    path: PathBuf,
    journal: Journal,
    /// Joined on close, so the file lock is released before `close` returns
    /// and a new bridge can open the same directory at once.
    writer: JoinHandle<()>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and reads it in full. Blocks on
    /// file I/O; call it off the async runtime.
    pub fn open(dir: &Path) -> Result<(Store, Contents), StoreError> {
        let path = dir.join(FILE_NAME);
        std::fs::create_dir_all(dir).map_err(|error| StoreError::Open {
            path: path.clone(),
            reason: format!("cannot create the data directory: {error}"),
        })?;

        // redb would take an empty file for a new store, but the bridge
        // never leaves one empty: it is a store cut short (a full disk, a
        // copy that failed), and starting empty would hide that.
        if std::fs::metadata(&path).is_ok_and(|metadata| metadata.len() == 0) {
            return Err(StoreError::Corrupt {
                path,
                reason: "the file is empty".to_owned(),
            });
        }

        // redb may panic on a file damaged outside it rather than return an
        // error; either way the answer is the same refusal.
        let opened = panic::catch_unwind(AssertUnwindSafe(|| open_and_read(&path)));
        let (database, contents) = opened.unwrap_or_else(|_| {
            Err(StoreError::Corrupt {
                path: path.clone(),
                reason: "the storage engine failed while reading it".to_owned(),
            })
        })?;
        info!(
            path = %path.display(),
            machines = contents.machines.len(),
            accounts = contents.accounts.len(),
            "store opened"
        );

        let path_shared: Arc<Path> = path.as_path().into();
        let (journal, writer) =
            journal::start(database, path_shared).map_err(|error| StoreError::Open {
                path: path.clone(),
                reason: format!("cannot start the writer thread: {error}"),
            })?;
        Ok((
            Store {
                path,
                journal,
                writer,
            },
            contents,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle the registry writes through.
    pub fn journal(&self) -> Journal {
        self.journal.clone()
    }

    /// Commits what is queued, stops the writer and closes the file. Blocks
    /// until then; call it off the async runtime.
    pub fn close(self) {
        self.journal.close();
        if self.writer.join().is_err() {
            warn!(path = %self.path.display(), "store writer ended by a panic");
        }
    }
}

// LIMITATION: the integrity check on open reads the whole file, so start-up
// time grows with the size of the store (not measured beyond the tests'
// few hundred records).
pub(super) fn open_and_read(path: &Path) -> Result<(Database, Contents), StoreError> {
    let database = Database::builder()
        .set_check_integrity_on_open(true)
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|error| opening_failed(path, error))?;
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };

    match format_version(&database).map_err(corrupt)? {
        Version::Current => {}
        Version::Empty => initialize(&database).map_err(|error| StoreError::Write {
            path: path.to_owned(),
            reason: error.to_string(),
        })?,
        Version::Newer(found) => {
            return Err(StoreError::NewerFormat {
                path: path.to_owned(),
                found,
            });
        }
        Version::Unknown(found) => {
            return Err(corrupt(format!("unknown format version {found}")));
        }
        Version::Missing => {
            return Err(corrupt("it holds tables but no format version".to_owned()));
        }
    }

    let contents = read_contents(&database).map_err(corrupt)?;
    Ok((database, contents))
}

/// Sorts a failed open into "cannot get at it" and "it is damaged".
fn opening_failed(path: &Path, error: DatabaseError) -> StoreError {
    let path = path.to_owned();
    let reason = error.to_string();
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Open {
                path,
                reason: format!("{reason} (is another cherry-bridge using this data directory?)"),
            }
        }
        DatabaseError::Storage(StorageError::Io(io))
            if io.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Open { path, reason }
        }
        _ => StoreError::Corrupt { path, reason },
    }
}

/// What the `meta` table says about the format.
enum Version {
    /// A new, empty file.
    Empty,
    Current,
    Newer(u64),
    /// Older than any version this build ever wrote.
    Unknown(u64),
    /// Tables exist, but no version: not a file this program made.
    Missing,
}

fn format_version(database: &Database) -> Result<Version, String> {
    let read = database.begin_read().map_err(|error| error.to_string())?;
    let meta = match read.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => {
            let tables = read.list_tables().map_err(|error| error.to_string())?;
            let is_empty = tables.count() == 0;
            return Ok(if is_empty {
                Version::Empty
            } else {
                Version::Missing
            });
        }
        Err(error) => return Err(format!("table meta: {error}")),
    };
    let found = meta
        .get(VERSION_KEY)
        .map_err(|error| format!("table meta: {error}"))?
        .map(|guard| guard.value());
    Ok(match found {
        None => Version::Missing,
        Some(FORMAT_VERSION) => Version::Current,
        Some(found) if found > FORMAT_VERSION => Version::Newer(found),
        Some(found) => Version::Unknown(found),
    })
}

/// Lays out a new store: every table, and the format version.
fn initialize(database: &Database) -> Result<(), redb::Error> {
    let write = database.begin_write()?;
    {
        let mut meta = write.open_table(META)?;
        meta.insert(VERSION_KEY, FORMAT_VERSION)?;
        write.open_table(MACHINES)?;
        write.open_table(ACCOUNTS)?;
    }
    write.commit()?;
    Ok(())
}

fn read_contents(database: &Database) -> Result<Contents, String> {
    let read = database.begin_read().map_err(|error| error.to_string())?;
    let machines = read_table::<MachineRecord>(&read, MACHINES, "machines")?;
    let accounts = read_table::<AccountRecord>(&read, ACCOUNTS, "accounts")?;
    Ok(Contents {
        machines: machines.into_iter().map(Properties::from).collect(),
        accounts: accounts.into_iter().map(Account::from).collect(),
    })
}

fn read_table<R: serde::de::DeserializeOwned>(
    read: &redb::ReadTransaction,
    table: TableDefinition<u128, &[u8]>,
    name: &str,
) -> Result<Vec<R>, String> {
    let table = read
        .open_table(table)
        .map_err(|error| format!("table {name}: {error}"))?;
    let rows = table
        .iter()
        .map_err(|error| format!("table {name}: {error}"))?;
    let mut records = Vec::new();
    for row in rows {
        let (key, value) = row.map_err(|error| format!("table {name}: {error}"))?;
        let record = serde_json::from_slice(value.value()).map_err(|error| {
            let key = uuid::Uuid::from_u128(key.value());
            format!("table {name}, record {key}: {error}")
        })?;
        records.push(record);
    }
    Ok(records)
}
