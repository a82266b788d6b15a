//! The SQLite index: snapshot envelopes, object locations, pack lengths.
//!
//! Architecture Invariant: every SQL statement of the crate is in this file,
//! and the index holds no plaintext: envelopes (sealed), keyed ids, hashes,
//! sizes, times and locations only.
//!
//! WAL journal, `BEGIN IMMEDIATE` for every write. Snapshot rows are
//! written in batches ([`Index::commit_batch`]: the snapshots sealed since
//! the last one, `Repo`'s flush) with `synchronous = NORMAL`: they reach
//! the WAL in the page cache, which survives a crash of the process but not
//! a power cut. The index never waits for the disk on the commit path: the
//! packs are the commit record (each snapshot's envelope follows its
//! objects there), the barrier syncs them alone, `durable_seq` is
//! recorded in the next batch written after it, and after a crash or a
//! power cut `repo::agent` rebuilds from the packs the rows the index
//! lacks. Every other write (prune, forget, restore, recovery, metadata)
//! is `FULL`. A mount checkpoints the WAL from a connection of its own
//! ([`Checkpointer`]), off the commit path. The schema version is SQLite's
//! `user_version`; migrations are additive and run in one transaction.

use crate::repo::store::Location;
use crate::seal::envelope::Envelope;
use crate::seal::keys::AgentId;
use crate::seal::tree::{ObjectId, ObjectKind};
use crate::{Error, Result};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

/// Schema version written by this build.
pub const SCHEMA_VERSION: i64 = 4;

const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     CREATE TABLE snapshots (
         seq INTEGER PRIMARY KEY,
         hash BLOB NOT NULL,
         parent BLOB NOT NULL,
         payload_hash BLOB NOT NULL,
         timestamp_ms INTEGER NOT NULL,
         format_version INTEGER NOT NULL,
         key_version INTEGER NOT NULL,
         byte_size INTEGER NOT NULL,
         sealed BLOB NOT NULL
     );
     CREATE TABLE objects (
         id BLOB PRIMARY KEY,
         kind INTEGER NOT NULL,
         pack INTEGER NOT NULL,
         offset INTEGER NOT NULL,
         len INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE packs (id INTEGER PRIMARY KEY, committed_len INTEGER NOT NULL);",
    ),
    // Replication: each object records the snapshot that first committed it
    // (the unit uploaded with that snapshot); progress lives in `meta`.
    (
        2,
        "ALTER TABLE objects ADD COLUMN seq INTEGER;
         CREATE INDEX objects_by_seq ON objects (seq);",
    ),
    // Retention: forgotten snapshots keep their row (the chain still
    // verifies) and get a signed forget record; their content may be pruned.
    (
        3,
        "CREATE TABLE forgotten (
             seq INTEGER PRIMARY KEY,
             at_ms INTEGER NOT NULL,
             record BLOB NOT NULL,
             remote_pruned INTEGER NOT NULL DEFAULT 0
         );",
    ),
    // Tree format 6: a commit's metadata objects are listed in a few rows
    // of up to `HOME_PART` objects, keyed by the commit and the first id
    // they hold, found through their home (`tree::ObjRef`) instead of one
    // row each; each pack records where its last object ends and which
    // snapshot committed it, kept as commits append (recovery reads them).
    (
        4,
        "CREATE TABLE homes (
             seq INTEGER NOT NULL,
             first BLOB NOT NULL,
             count INTEGER NOT NULL,
             bytes INTEGER NOT NULL,
             objects BLOB NOT NULL,
             PRIMARY KEY (seq, first)
         ) WITHOUT ROWID;
         ALTER TABLE packs ADD COLUMN objects_end INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE packs ADD COLUMN last_seq INTEGER;
         CREATE TEMP TABLE pack_ends AS
             SELECT pack, MAX(offset + len) AS objects_end, seq FROM objects GROUP BY pack;
         UPDATE packs SET
             objects_end = COALESCE((SELECT objects_end FROM pack_ends WHERE pack_ends.pack = packs.id), 0),
             last_seq = (SELECT seq FROM pack_ends WHERE pack_ends.pack = packs.id);
         DROP TABLE pack_ends;",
    ),
];

/// Bytes of one object in a `homes` row: id, kind, pack, offset, length.
const HOME_ENTRY: usize = 32 + 1 + 4 + 8 + 4;

/// Most objects in one `homes` row: a row of 16 (784 bytes) stays inside
/// its B-tree page (SQLite spills a row of a `WITHOUT ROWID` table past
/// about 1,000 bytes to overflow pages, which a lookup would read in turn),
/// so a lookup reads one leaf whatever the size of the commit.
const HOME_PART: usize = 16;

/// A `homes` row's objects, sorted by id (looked up by binary search).
fn encode_homes(objects: &[&NewObject]) -> Vec<u8> {
    let mut b = Vec::with_capacity(objects.len() * HOME_ENTRY);
    for o in objects {
        b.extend_from_slice(&o.id.0);
        b.push(o.kind as u8);
        b.extend_from_slice(&o.loc.pack.to_le_bytes());
        b.extend_from_slice(&o.loc.offset.to_le_bytes());
        b.extend_from_slice(&o.loc.len.to_le_bytes());
    }
    b
}

/// One object of a `homes` row.
fn home_entry(e: &[u8], seq: u64) -> Result<NewObject> {
    let kind = ObjectKind::from_u8(e[32])
        .filter(|k| k.homed())
        .ok_or_else(|| Error::corrupt(format!("index row of snapshot {seq}"), "object kind"))?;
    Ok(NewObject {
        id: ObjectId(e[..32].try_into().expect("32")),
        kind,
        loc: Location {
            pack: u32::from_le_bytes(e[33..37].try_into().expect("4")),
            offset: u64::from_le_bytes(e[37..45].try_into().expect("8")),
            len: u32::from_le_bytes(e[45..49].try_into().expect("4")),
        },
        home: seq,
    })
}

/// Every object of a `homes` row.
fn home_entries(b: &[u8], seq: u64) -> Result<Vec<NewObject>> {
    if !b.len().is_multiple_of(HOME_ENTRY) {
        return Err(Error::corrupt(
            format!("index row of snapshot {seq}"),
            "not a whole number of objects",
        ));
    }
    b.chunks_exact(HOME_ENTRY)
        .map(|e| home_entry(e, seq))
        .collect()
}

/// An object with a row of its own, from `SELECT id, kind, pack, offset, len`.
fn own_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<NewObject> {
    let kind: u8 = r.get(1)?;
    Ok(NewObject {
        id: ObjectId(blob32(r.get(0)?)?),
        kind: ObjectKind::from_u8(kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Integer,
                "object kind".into(),
            )
        })?,
        loc: Location {
            pack: r.get(2)?,
            offset: r.get(3)?,
            len: r.get(4)?,
        },
        home: 0,
    })
}

/// Blind metadata of one snapshot, for listings (nothing decrypted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Sequence number.
    pub seq: u64,
    /// Envelope hash.
    pub hash: [u8; 32],
    /// Parent hash.
    pub parent: [u8; 32],
    /// Commit time, ms.
    pub timestamp_ms: i64,
    /// Sealed manifest size.
    pub byte_size: u64,
    /// Key version.
    pub key_version: u32,
}

/// An object in the packs: written by a commit, or listed by the index.
#[derive(Clone, Copy, Debug)]
pub struct NewObject {
    /// Id.
    pub id: ObjectId,
    /// Kind.
    pub kind: ObjectKind,
    /// Where it is.
    pub loc: Location,
    /// The snapshot whose `homes` rows list it (a metadata object of tree
    /// format 6, `tree::ObjRef`); 0: it has a row of its own, found by id.
    pub home: u64,
}

/// `meta` key: the last sequence number known to be on stable storage.
pub const META_DURABLE: &str = "durable_seq";

/// `meta` key: the first snapshot this index holds a row of, when a lazy
/// restore started from a signed checkpoint (the flat start, #16) and the
/// history before it is still being fetched
/// (`crate::history::older`). Absent: every row from 1 is here.
pub const META_HISTORY_FROM: &str = "history_from";

/// WAL pages past which the writing connection checkpoints inline once a
/// [`Checkpointer`] works beside it: a backstop for a checkpointer that
/// cannot keep up (SQLite's own default, used without one, is 1,000).
pub const WAL_BACKSTOP_PAGES: u32 = 16_384;

/// WAL frames past which the checkpointer also restarts the WAL.
pub const WAL_RESTART_FRAMES: i64 = 2_000;

/// Checkpoints an index's WAL into its database from a connection of its
/// own, so that the copy and its two disk syncs run beside the commits
/// instead of inside whichever commit crossed SQLite's threshold (a commit
/// of a few hundred microseconds that now and then took milliseconds).
/// A passive checkpoint never blocks the writer and moves only committed
/// frames: what is durable, and when, does not change.
pub struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// Checkpoints the WAL: first passively (the frames no reader still
    /// needs are copied into the database and both files synced, beside the
    /// writer); then, once the WAL holds [`WAL_RESTART_FRAMES`] or more,
    /// with a restart, which holds the writer for the few frames committed
    /// meanwhile and lets the next commit write the WAL from its start. A
    /// passive checkpoint alone never catches up with a steady writer, and
    /// the WAL would grow until the writer paused. The restart is skipped
    /// (tried again next time) when a commit is running: the connection
    /// never waits for a lock, and a checkpoint that meets one is skipped.
    /// Returns the frames in the WAL and how many of them are in the
    /// database (`None` if skipped).
    pub fn run(&self) -> Result<Option<(i64, i64)>> {
        let pragma = |mode: &str| -> Result<Option<(i64, i64)>> {
            match self
                .conn
                .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    Ok((r.get(1)?, r.get(2)?))
                }) {
                Ok(counts) => Ok(Some(counts)),
                // A commit or a reader was in the way.
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                    Ok(None)
                }
                Err(e) => Err(e.into()),
            }
        };
        match pragma("PASSIVE")? {
            Some((frames, copied)) if frames >= WAL_RESTART_FRAMES => {
                Ok(pragma("RESTART")?.or(Some((frames, copied))))
            }
            passive => Ok(passive),
        }
    }
}

/// SQLite page size of a new index. A commit dirties a handful of b-tree
/// pages (the snapshot row, the `homes` row, the pack lengths, a chunk's
/// row and its `seq` index entry), and the WAL takes each whole: at 2 KiB
/// instead of SQLite's default 4 KiB the daemon wrote 23% fewer bytes for
/// the same small-file workload and the atomic save's p99 fell from
/// 6.4-7.2 ms to 4.8-5.5 ms in seven paired rounds, with the index no
/// larger (docs/PERFORMANCE.md, session 24). At 1 KiB the index doubled
/// (rows of `homes` spill to overflow pages).
pub const PAGE_BYTES: u32 = 2048;

/// The objects snapshot `?1` first committed that have rows of their own.
const OWN_OBJECTS_OF: &str =
    "SELECT id, kind, pack, offset, len FROM objects WHERE seq = ?1 ORDER BY pack, offset";

/// What the index records of one snapshot's commit ([`Index::commit_batch`]).
pub struct SnapshotRows<'a> {
    /// The objects it first stored.
    pub objects: &'a [NewObject],
    /// The pack lengths right after its commit record.
    pub packs: &'a [(u32, u64)],
    /// Its envelope.
    pub env: &'a Envelope,
}

/// One agent's index.
pub struct Index {
    conn: Connection,
    /// The connection's `synchronous` level as last set. A write switches
    /// it only when it needs the other one (a `PRAGMA` is parsed anew each
    /// time: two of them around every commit cost the commit thread 12% of
    /// its time), so a run of commits pays no switch at all.
    synchronous: std::cell::Cell<Synchronous>,
}

/// A connection's `synchronous` level, as [`Index`] tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Synchronous {
    /// Every commit syncs the WAL: durable writes.
    Full,
    /// Commits do not wait for the disk: snapshot commits (their records
    /// are in the packs, synced at the barrier) and lazy markers.
    Normal,
    /// A switch failed half way: the next write sets its level first.
    Unknown,
}

fn blob32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "expected 32 bytes".into(),
        )
    })
}

impl Index {
    /// Opens (creating and migrating when `writer`) the index at `path`.
    pub fn open(path: &Path, writer: bool) -> Result<Self> {
        if !writer && !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        // SQLite opens by name: never through a symlink at the last
        // component (the directory above was checked by the caller).
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::UnsafePath {
                path: path.to_owned(),
                detail: "is a symlink; sovseal never follows one where it writes".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_URI
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // Plans that do not depend on bound values: with them SQLite
        // re-prepared `WHERE seq = ?1` at every new value (a fifth of the
        // replicator thread's time went to parsing the same queries again).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        if writer {
            // Takes effect only for a database not yet written (before the
            // switch to WAL below writes its header); an existing index
            // keeps the page size it was created with.
            conn.pragma_update(None, "page_size", PAGE_BYTES)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut idx = Index {
            conn,
            synchronous: std::cell::Cell::new(Synchronous::Full),
        };
        let v: i64 = idx
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v > SCHEMA_VERSION {
            return Err(Error::Invalid(format!(
                "index {} has schema version {v}, newer than this build's {SCHEMA_VERSION}; upgrade sovseal",
                path.display()
            )));
        }
        if v < SCHEMA_VERSION {
            if !writer {
                return Err(Error::Invalid(format!(
                    "index {} has schema version {v}; open the agent for writing once to migrate it",
                    path.display()
                )));
            }
            idx.migrate(v)?;
        }
        Ok(idx)
    }

    /// Sets the connection's `synchronous` level for the writes that
    /// follow, unless it is set already. Every write calls it first: a
    /// durable write must never run at the level a lazy one left.
    fn set_synchronous(&self, level: Synchronous) -> Result<()> {
        if self.synchronous.get() == level {
            return Ok(());
        }
        let value = match level {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Unknown => unreachable!("never asked for"),
        };
        self.synchronous.set(Synchronous::Unknown);
        self.conn.pragma_update(None, "synchronous", value)?;
        self.synchronous.set(level);
        Ok(())
    }

    /// Sets `synchronous = FULL` unless set: for a durable write.
    fn durable(&self) -> Result<()> {
        self.set_synchronous(Synchronous::Full)
    }

    fn migrate(&mut self, from: i64) -> Result<()> {
        self.durable()?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", v)?;
        }
        if from == 0 {
            // A new index: nothing is durable until the first barrier. (An
            // index from before durability was recorded has no such row:
            // every commit then was synchronous.)
            put_meta(&tx, META_DURABLE, Some(b"0"))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The agent id this index belongs to, if recorded.
    pub fn agent_id(&self) -> Result<Option<AgentId>> {
        let v: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'agent_id'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        v.map(|v| blob32(v).map(AgentId).map_err(Error::from))
            .transpose()
    }

    /// Records the agent id (once, at creation).
    pub fn set_agent_id(&self, id: &AgentId) -> Result<()> {
        self.durable()?;
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('agent_id', ?1)",
            params![&id.0[..]],
        )?;
        Ok(())
    }

    /// A `meta` value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Sets (or with `None` removes) a `meta` value.
    pub fn set_meta(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        self.durable()?;
        put_meta(&self.conn, key, value)
    }

    /// Sets `meta` rows in one transaction that does not wait for the disk
    /// (`synchronous = NORMAL` for it alone): for progress markers whose loss
    /// in a power cut only repeats idempotent work. The rows become durable
    /// with the next synchronous commit, which syncs the WAL behind them.
    pub fn set_meta_lazy(&self, rows: &[(&str, Option<&[u8]>)]) -> Result<()> {
        self.set_synchronous(Synchronous::Normal)?;
        let tx = self.conn.unchecked_transaction()?;
        for (k, v) in rows {
            put_meta(&tx, k, *v)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The objects first committed by snapshot `seq`, in pack order: those
    /// with rows of their own and those its `homes` rows list.
    pub fn objects_of(&self, seq: u64) -> Result<Vec<NewObject>> {
        let mut out = self.own_objects_of(seq)?;
        let homed = home_entries_of(&self.conn, seq)?;
        if !homed.is_empty() {
            out.extend(homed);
            out.sort_by_key(|o| (o.loc.pack, o.loc.offset));
        }
        Ok(out)
    }

    /// Where metadata object `id` stored at home `seq` is, and its kind:
    /// one B-tree lookup of the row that would hold it, then a binary
    /// search in that row.
    pub fn homed_object(&self, seq: u64, id: &ObjectId) -> Result<Option<(u8, Location)>> {
        let b: Option<Vec<u8>> = self
            .conn
            .prepare_cached(
                "SELECT objects FROM homes WHERE seq = ?1 AND first <= ?2 ORDER BY first DESC LIMIT 1",
            )?
            .query_row(params![seq, &id.0[..]], |r| r.get(0))
            .optional()?;
        let Some(b) = b else {
            return Ok(None);
        };
        if !b.len().is_multiple_of(HOME_ENTRY) {
            return Err(Error::corrupt(
                format!("index row of snapshot {seq}"),
                "not a whole number of objects",
            ));
        }
        let n = b.len() / HOME_ENTRY;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let e = &b[mid * HOME_ENTRY..(mid + 1) * HOME_ENTRY];
            match e[..32].cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let o = home_entry(e, seq)?;
                    return Ok(Some((o.kind as u8, o.loc)));
                }
            }
        }
        Ok(None)
    }

    /// The objects with rows of their own first committed by `seq`.
    fn own_objects_of(&self, seq: u64) -> Result<Vec<NewObject>> {
        let mut st = self.conn.prepare_cached(OWN_OBJECTS_OF)?;
        let rows = st.query_map([seq], own_object)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number and sealed bytes of the objects of snapshots after `seq`.
    pub fn objects_after(&self, seq: u64) -> Result<(u64, u64)> {
        let (n, b): (u64, u64) = self
            .conn
            .prepare_cached("SELECT COUNT(*), COALESCE(SUM(len), 0) FROM objects WHERE seq > ?1")?
            .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (hn, hb): (u64, u64) = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0) FROM homes WHERE seq > ?1",
            )?
            .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((n + hn, b + hb))
    }

    /// Committed length of every pack.
    pub fn packs(&self) -> Result<BTreeMap<u32, u64>> {
        let mut st = self.conn.prepare("SELECT id, committed_len FROM packs")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u64>(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Where an object is, and the kind it was stored as.
    pub fn object(&self, id: &ObjectId) -> Result<Option<(u8, Location)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT kind, pack, offset, len FROM objects WHERE id = ?1")?;
        Ok(st
            .query_row(params![&id.0[..]], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    Location {
                        pack: r.get(1)?,
                        offset: r.get(2)?,
                        len: r.get(3)?,
                    },
                ))
            })
            .optional()?)
    }

    /// Every object the index lists (an object stored at several homes
    /// once for each).
    pub fn all_objects(&self) -> Result<Vec<NewObject>> {
        let mut st = self
            .conn
            .prepare("SELECT id, kind, pack, offset, len FROM objects")?;
        let rows = st.query_map([], own_object)?;
        let mut out: Vec<NewObject> = rows.collect::<rusqlite::Result<_>>()?;
        for (seq, b) in self.all_homes()? {
            out.extend(home_entries(&b, seq)?);
        }
        Ok(out)
    }

    /// Every `homes` row: (seq, objects).
    fn all_homes(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut st = self.conn.prepare("SELECT seq, objects FROM homes")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A [`Checkpointer`] for this index, on a connection of its own; from
    /// then on this connection checkpoints inline only past
    /// [`WAL_BACKSTOP_PAGES`]. The caller runs the checkpointer, off the
    /// commit path.
    pub fn checkpointer(&self) -> Result<Checkpointer> {
        let path = self
            .conn
            .path()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Invalid("an index in memory has no checkpointer".into()))?;
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )?;
        // Never wait: a passive checkpoint takes no lock a commit holds,
        // and a restart that would wait is tried again next time.
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        Ok(Checkpointer { conn })
    }

    /// The WAL pages past which this connection checkpoints inline.
    pub fn wal_autocheckpoint(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?)
    }

    /// Commits a snapshot atomically: its new objects, the packs' committed
    /// lengths, and its envelope, which must extend the current head.
    pub fn commit(
        &mut self,
        objects: &[NewObject],
        packs: &[(u32, u64)],
        env: &Envelope,
    ) -> Result<()> {
        self.commit_batch(
            &[SnapshotRows {
                objects,
                packs,
                env,
            }],
            None,
        )
    }

    /// Commits snapshots in order, each as [`Index::commit`] would, in one
    /// transaction (all of them or none), with `durable` recorded as the
    /// durable point when given (the caller synced the packs, which hold
    /// the commit records, so it does not wait for the disk: a power cut may
    /// lose this row, never make it name more than what was synced, as the
    /// WAL keeps commits in order). Each snapshot brings the pack lengths of
    /// its own commit, so that the packs' recorded ends are those of the
    /// last one.
    pub fn commit_batch(
        &mut self,
        snapshots: &[SnapshotRows<'_>],
        durable: Option<u64>,
    ) -> Result<()> {
        // Not synced here: the snapshots' records are in the packs, which
        // the barrier syncs before it records them durable (and a crash
        // before that is caught up from them).
        self.set_synchronous(Synchronous::Normal)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for s in snapshots {
            Self::commit_rows(&tx, s.objects, s.packs, s.env)?;
        }
        if let Some(seq) = durable {
            put_meta(&tx, META_DURABLE, Some(seq.to_string().as_bytes()))?;
        }
        tx.commit()?;
        Ok(())
    }

    fn commit_rows(
        tx: &rusqlite::Transaction<'_>,
        objects: &[NewObject],
        packs: &[(u32, u64)],
        env: &Envelope,
    ) -> Result<()> {
        let seq = env.sequence_number;
        let head: Option<u64> = tx
            .prepare_cached("SELECT MAX(seq) FROM snapshots")?
            .query_row([], |r| r.get(0))?;
        // The first row is snapshot 1, or where a flat start begins.
        let first = || -> Result<u64> { Ok(history_from(tx)?.unwrap_or(1)) };
        if head.map_or_else(first, |h| Ok(h + 1))? != seq {
            return Err(Error::ChainBroken {
                seq,
                detail: format!("commit does not extend head {head:?}"),
            });
        }
        check_homes(objects, seq)?;
        let mut homed = Vec::new();
        // Where the objects this commit lists end, per pack (a duplicate
        // that gets no row of its own is not listed).
        let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
        let mut listed = |o: &NewObject| {
            let end = ends.entry(o.loc.pack).or_default();
            *end = (*end).max(o.loc.offset + u64::from(o.loc.len));
        };
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO objects (id, kind, pack, offset, len, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for o in objects {
                if o.home == seq {
                    homed.push(o);
                    continue;
                }
                let inserted = ins.execute(params![
                    &o.id.0[..],
                    o.kind as u8,
                    o.loc.pack,
                    o.loc.offset,
                    o.loc.len,
                    seq
                ])?;
                if inserted == 1 {
                    listed(o);
                }
            }
            // Rows left from a lost snapshot of this number (an index that
            // lost its snapshot rows but not these) are replaced.
            tx.prepare_cached("DELETE FROM homes WHERE seq = ?1")?
                .execute([seq])?;
            homed.sort_by_key(|o| o.id);
            homed.dedup_by_key(|o| o.id);
            homed.iter().for_each(|o| listed(o));
            insert_homes(tx, seq, &homed)?;
            let mut up = tx.prepare_cached(
                "INSERT INTO packs (id, committed_len) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET committed_len = excluded.committed_len",
            )?;
            for (p, len) in packs {
                up.execute(params![p, len])?;
            }
            let mut end = tx.prepare_cached(
                "INSERT INTO packs (id, committed_len, objects_end, last_seq) VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET objects_end = excluded.objects_end, last_seq = excluded.last_seq
                 WHERE excluded.objects_end > packs.objects_end",
            )?;
            for (p, e) in &ends {
                end.execute(params![p, e, seq])?;
            }
        }
        Self::insert_snapshot(tx, env)?;
        Ok(())
    }

    /// What this index still says about a history it no longer holds (for an
    /// index without snapshots): objects, pack data, forget records, a
    /// replication marker. Empty for a new index.
    pub fn history_traces(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let count = |sql: &str| -> Result<u64> {
            Ok(self.conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?)
        };
        let objects = count(
            "SELECT (SELECT COUNT(*) FROM objects) + (SELECT COALESCE(SUM(count), 0) FROM homes)",
        )?;
        if objects > 0 {
            out.push(format!("{objects} sealed objects listed in the index"));
        }
        let packed = count(&format!(
            "SELECT COALESCE(SUM(committed_len - {}), 0) FROM packs WHERE committed_len > {}",
            crate::repo::pack::PACK_MAGIC.len(),
            crate::repo::pack::PACK_MAGIC.len()
        ))?;
        if packed > 0 {
            out.push(format!("{packed} bytes of committed pack data"));
        }
        let forgotten = count("SELECT COUNT(*) FROM forgotten")?;
        if forgotten > 0 {
            out.push(format!("{forgotten} forget records"));
        }
        if let Some(r) = self
            .meta(super::replication_state::META_REPLICATED)?
            .and_then(|v| String::from_utf8(v).ok())
            .filter(|v| v != "0")
        {
            out.push(format!(
                "a replication marker (snapshot {r} was replicated)"
            ));
        }
        Ok(out)
    }

    /// Records that every snapshot up to `seq` is on stable storage (the
    /// caller synced the packs first), in a synchronous transaction whose
    /// WAL sync also makes every earlier `NORMAL` commit durable (recovery
    /// and restore).
    pub fn mark_durable(&self, seq: u64) -> Result<()> {
        self.durable()?;
        put_meta(&self.conn, META_DURABLE, Some(seq.to_string().as_bytes()))
    }

    /// The last sequence number recorded durable by [`Index::mark_durable`];
    /// `None` for a data dir written before durability was recorded (every
    /// commit then was synchronous, so all of it is durable).
    pub fn durable_seq(&self) -> Result<Option<u64>> {
        Ok(self
            .meta(META_DURABLE)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse().ok()))
    }

    /// Removes every snapshot after `seq` with the objects they first
    /// committed, and sets each pack's committed length to the end of the
    /// last record it still holds: recovery after a power cut lost those
    /// snapshots' bytes. Synchronous.
    pub fn truncate_after(&self, seq: u64) -> Result<()> {
        self.durable()?;
        let tx = self.conn.unchecked_transaction()?;
        tx.execute("DELETE FROM snapshots WHERE seq > ?1", [seq])?;
        tx.execute("DELETE FROM objects WHERE seq > ?1", [seq])?;
        tx.execute("DELETE FROM homes WHERE seq > ?1", [seq])?;
        tx.execute("DELETE FROM forgotten WHERE seq > ?1", [seq])?;
        Self::recompute_pack_ends(&tx)?;
        tx.execute(
            "UPDATE packs SET committed_len = MAX(?1, objects_end)",
            [crate::repo::pack::PACK_MAGIC.len() as u64],
        )?;
        put_meta(&tx, META_DURABLE, Some(seq.to_string().as_bytes()))?;
        tx.commit()?;
        Ok(())
    }

    /// Sets every pack's `objects_end` and `last_seq` from the objects the
    /// index lists, after rows were removed or moved (a cut back, a
    /// repack): reads every row, as those rare steps already do.
    fn recompute_pack_ends(tx: &rusqlite::Transaction<'_>) -> Result<()> {
        let mut ends: BTreeMap<u32, (u64, Option<u64>)> = BTreeMap::new();
        {
            let mut st =
                tx.prepare("SELECT pack, MAX(offset + len), seq FROM objects GROUP BY pack")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            for row in rows {
                let (p, v) = row?;
                ends.insert(p, v);
            }
            let mut st = tx.prepare("SELECT seq, objects FROM homes")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
            for row in rows {
                let (seq, b) = row?;
                for o in home_entries(&b, seq)? {
                    let end = o.loc.offset + u64::from(o.loc.len);
                    let e = ends.entry(o.loc.pack).or_insert((0, None));
                    if end > e.0 {
                        *e = (end, Some(seq));
                    }
                }
            }
        }
        tx.execute("UPDATE packs SET objects_end = 0, last_seq = NULL", [])?;
        let mut up =
            tx.prepare("UPDATE packs SET objects_end = ?2, last_seq = ?3 WHERE id = ?1")?;
        for (p, (end, seq)) in ends {
            up.execute(params![p, end, seq])?;
        }
        Ok(())
    }

    /// Where the last indexed object of `pack` ends (0 for none).
    pub fn objects_end(&self, pack: u32) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT objects_end FROM packs WHERE id = ?1")?
            .query_row([pack], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// The snapshot that first committed the object ending last in `pack`.
    pub fn last_object_seq(&self, pack: u32) -> Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT last_seq FROM packs WHERE id = ?1")?
            .query_row([pack], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Sets the committed length of a pack (recovery fitted a pack that
    /// lost its tail). Synchronous.
    pub fn set_pack_length(&self, pack: u32, len: u64) -> Result<()> {
        self.durable()?;
        self.conn.execute(
            "UPDATE packs SET committed_len = ?2 WHERE id = ?1",
            params![pack, len],
        )?;
        Ok(())
    }

    /// Raises the committed length of packs (recovery found whole records
    /// of indexed snapshots past it). Synchronous.
    pub fn set_pack_lengths(&self, packs: &[(u32, u64)]) -> Result<()> {
        self.durable()?;
        let tx = self.conn.unchecked_transaction()?;
        for (p, len) in packs {
            tx.execute(
                "UPDATE packs SET committed_len = MAX(committed_len, ?2) WHERE id = ?1",
                params![p, len],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_snapshot(tx: &rusqlite::Transaction<'_>, env: &Envelope) -> Result<()> {
        tx.prepare_cached(
            "INSERT INTO snapshots (seq, hash, parent, payload_hash, timestamp_ms, format_version, key_version, byte_size, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
                env.sequence_number,
                &env.hash()[..],
                &env.parent_snapshot[..],
                &env.client_payload_hash[..],
                env.timestamp,
                env.format_version,
                env.key_version,
                env.byte_size,
                &env.sealed
            ])?;
        Ok(())
    }

    /// The first snapshot this index holds a row of while the history
    /// before it is being fetched ([`META_HISTORY_FROM`]); `None`: the whole
    /// history is here.
    pub fn history_from(&self) -> Result<Option<u64>> {
        history_from(&self.conn)
    }

    /// Inserts the rows of snapshots older than the first held
    /// (`envelopes`, newest first, each checked by the caller against the
    /// one after it), with the forget records naming them, and moves
    /// [`META_HISTORY_FROM`] down to the oldest (removed once it is 1), in
    /// one transaction. Refused unless they end right before the first row.
    /// No pack commit record is written for them: they are the remote's,
    /// and the index is the only local record of them (a data dir that
    /// loses its index is refused, as any is).
    pub fn insert_history(
        &self,
        envelopes: &[Envelope],
        forgotten: &[(u64, i64, Vec<u8>)],
    ) -> Result<()> {
        let Some(oldest) = envelopes.last() else {
            return Ok(());
        };
        self.durable()?;
        let tx = self.conn.unchecked_transaction()?;
        let first: Option<u64> = tx
            .prepare_cached("SELECT MIN(seq) FROM snapshots")?
            .query_row([], |r| r.get(0))?;
        let from = history_from(&tx)?;
        if from.is_none() || first != from {
            return Err(Error::Invalid(format!(
                "older history inserted into an index whose rows start at {first:?} (history from {from:?})"
            )));
        }
        let mut next = first.expect("checked");
        for env in envelopes {
            if env.sequence_number + 1 != next {
                return Err(Error::ChainBroken {
                    seq: env.sequence_number,
                    detail: format!("older history inserted out of order (next held: {next})"),
                });
            }
            Self::insert_snapshot(&tx, env)?;
            next = env.sequence_number;
        }
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO forgotten (seq, at_ms, record) VALUES (?1, ?2, ?3)",
            )?;
            for (seq, at, rec) in forgotten {
                ins.execute(params![seq, at, rec])?;
            }
        }
        let seq = oldest.sequence_number;
        let from = (seq > 1).then(|| seq.to_string());
        put_meta(&tx, META_HISTORY_FROM, from.as_deref().map(str::as_bytes))?;
        tx.commit()?;
        Ok(())
    }

    /// The stored hash of a snapshot (as recorded at commit).
    pub fn stored_hash(&self, seq: u64) -> Result<Option<[u8; 32]>> {
        let v: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM snapshots WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))
            .optional()?;
        Ok(v.map(blob32).transpose()?)
    }

    /// The full envelope of a snapshot.
    pub fn envelope(&self, agent: &AgentId, seq: u64) -> Result<Option<Envelope>> {
        let mut st = self.conn.prepare_cached(
            "SELECT parent, payload_hash, timestamp_ms, format_version, key_version, byte_size, sealed
             FROM snapshots WHERE seq = ?1",
        )?;
        Ok(st
            .query_row([seq], |r| {
                Ok(Envelope {
                    format_version: r.get(3)?,
                    key_version: r.get(4)?,
                    agent_id: *agent,
                    sequence_number: seq,
                    parent_snapshot: blob32(r.get(0)?)?,
                    client_payload_hash: blob32(r.get(1)?)?,
                    sealed: r.get(6)?,
                    byte_size: r.get(5)?,
                    timestamp: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Head sequence number.
    pub fn head_seq(&self) -> Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT MAX(seq) FROM snapshots")?
            .query_row([], |r| r.get(0))?)
    }

    /// First retained sequence number.
    pub fn first_seq(&self) -> Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT MIN(seq) FROM snapshots")?
            .query_row([], |r| r.get(0))?)
    }

    /// Number of retained snapshots.
    pub fn count(&self) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM snapshots")?
            .query_row([], |r| r.get(0))?)
    }

    /// Up to `limit` snapshots with `seq > after`, in order (cursor
    /// paging), each with whether a forget row names it (not verified: see
    /// `Agent::list`).
    pub fn list(&self, after: u64, limit: u64) -> Result<Vec<(SnapshotMeta, bool)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, hash, parent, timestamp_ms, byte_size, key_version,
                    seq IN (SELECT seq FROM forgotten) FROM snapshots
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, limit], |r| {
            Ok((
                SnapshotMeta {
                    seq: r.get(0)?,
                    hash: blob32(r.get(1)?)?,
                    parent: blob32(r.get(2)?)?,
                    timestamp_ms: r.get(3)?,
                    byte_size: r.get(4)?,
                    key_version: r.get(5)?,
                },
                r.get::<_, bool>(6)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl Index {
    /// Records forgotten snapshots with their signed forget records.
    pub fn forget(&self, records: &[(u64, i64, Vec<u8>)]) -> Result<()> {
        self.durable()?;
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO forgotten (seq, at_ms, record) VALUES (?1, ?2, ?3)",
            )?;
            for (seq, at, rec) in records {
                ins.execute(params![seq, at, rec])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgotten sequence numbers with their records and whether their remote
    /// content was pruned.
    pub fn forgotten(&self) -> Result<BTreeMap<u64, (Vec<u8>, bool)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT seq, record, remote_pruned FROM forgotten")?;
        let rows = st.query_map([], |r| {
            Ok((r.get(0)?, (r.get(1)?, r.get::<_, i64>(2)? != 0)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The sequence numbers of the forget records stored (not verified).
    pub fn forgotten_seqs(&self) -> Result<std::collections::BTreeSet<u64>> {
        let mut st = self.conn.prepare_cached("SELECT seq FROM forgotten")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The forget record stored for snapshot `seq`, if any (not verified:
    /// see `Agent::is_forgotten`).
    pub fn forget_record(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .prepare_cached("SELECT record FROM forgotten WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))
            .optional()?)
    }

    /// Marks the remote content of forgotten `seq` as pruned.
    pub fn set_remote_pruned(&self, seq: u64) -> Result<()> {
        self.set_pruned_as(seq, 1)
    }

    /// Records that a remote prune wrote the parts of forgotten snapshot
    /// `seq` again with the objects kept snapshots still read (2 in
    /// `remote_pruned`: pruned, and looked at again by the next prune).
    pub fn set_remote_trimmed(&self, seq: u64) -> Result<()> {
        self.set_pruned_as(seq, 2)
    }

    fn set_pruned_as(&self, seq: u64, how: i64) -> Result<()> {
        self.durable()?;
        self.conn
            .prepare_cached("UPDATE forgotten SET remote_pruned = ?2 WHERE seq = ?1")?
            .execute(params![seq, how])?;
        Ok(())
    }

    /// The forgotten snapshots a remote prune trimmed
    /// ([`Index::set_remote_trimmed`]).
    pub fn trimmed_seqs(&self) -> Result<std::collections::BTreeSet<u64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT seq FROM forgotten WHERE remote_pruned = 2")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every retained snapshot's (seq, timestamp_ms), ascending.
    pub fn retained(&self) -> Result<Vec<(u64, i64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT seq, timestamp_ms FROM snapshots
             WHERE seq NOT IN (SELECT seq FROM forgotten) ORDER BY seq",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Moves objects after a repack, drops dead ones and the emptied packs,
    /// and records the new packs' lengths, in one transaction: before it
    /// commits the old locations stay valid, after it the new ones are.
    pub fn relocate(
        &mut self,
        moved: &[NewObject],
        dead: &[NewObject],
        dropped_packs: &[u32],
        packs: &[(u32, u64)],
    ) -> Result<()> {
        self.durable()?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut mv = tx.prepare_cached(
                "UPDATE objects SET pack = ?2, offset = ?3, len = ?4 WHERE id = ?1",
            )?;
            // The `homes` rows touched: each object moved or removed by id.
            let mut homes: BTreeMap<u64, HashMap<ObjectId, Option<Location>>> = BTreeMap::new();
            for o in moved {
                if o.home == 0 {
                    mv.execute(params![&o.id.0[..], o.loc.pack, o.loc.offset, o.loc.len])?;
                } else {
                    homes.entry(o.home).or_default().insert(o.id, Some(o.loc));
                }
            }
            let mut del = tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?;
            for o in dead {
                if o.home == 0 {
                    del.execute([&o.id.0[..]])?;
                } else {
                    homes.entry(o.home).or_default().insert(o.id, None);
                }
            }
            for (seq, changes) in homes {
                let mut kept = Vec::new();
                for mut o in home_entries_of(&tx, seq)? {
                    match changes.get(&o.id) {
                        Some(None) => continue,
                        Some(Some(loc)) => o.loc = *loc,
                        None => {}
                    }
                    kept.push(o);
                }
                tx.execute("DELETE FROM homes WHERE seq = ?1", [seq])?;
                let refs: Vec<&NewObject> = kept.iter().collect();
                insert_homes(&tx, seq, &refs)?;
            }
            let mut dp = tx.prepare_cached("DELETE FROM packs WHERE id = ?1")?;
            for p in dropped_packs {
                dp.execute([p])?;
            }
            let mut up = tx.prepare_cached(
                "INSERT INTO packs (id, committed_len) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET committed_len = excluded.committed_len",
            )?;
            for (p, len) in packs {
                up.execute(params![p, len])?;
            }
        }
        Self::recompute_pack_ends(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether any object first committed by `seq` is still present.
    pub fn has_objects_of(&self, seq: u64) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM objects WHERE seq = ?1)
                 OR EXISTS (SELECT 1 FROM homes WHERE seq = ?1)",
            )?
            .query_row([seq], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

/// Checks that every object to be committed by snapshot `seq` either has
/// a row of its own (home 0) or is a metadata object stored at home `seq`:
/// anything else was sealed for another snapshot, and lookups through its
/// references would not find it.
pub(crate) fn check_homes(objects: &[NewObject], seq: u64) -> Result<()> {
    match objects
        .iter()
        .find(|o| o.home != 0 && (o.home != seq || !o.kind.homed()))
    {
        Some(o) => Err(Error::Invalid(format!(
            "{} {} was stored for snapshot {} but is committed by snapshot {seq}",
            o.kind.name(),
            o.id.to_hex(),
            o.home
        ))),
        None => Ok(()),
    }
}

/// Every object snapshot `seq` stored at home, sorted by id.
fn home_entries_of(conn: &rusqlite::Connection, seq: u64) -> Result<Vec<NewObject>> {
    let mut st = conn.prepare_cached("SELECT objects FROM homes WHERE seq = ?1 ORDER BY first")?;
    let rows = st.query_map([seq], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for b in rows {
        out.extend(home_entries(&b?, seq)?);
    }
    Ok(out)
}

/// Writes `objects` (sorted by id, no duplicates) as snapshot `seq`'s
/// `homes` rows of up to [`HOME_PART`] objects each.
fn insert_homes(conn: &rusqlite::Connection, seq: u64, objects: &[&NewObject]) -> Result<()> {
    let mut ins = conn.prepare_cached(
        "INSERT INTO homes (seq, first, count, bytes, objects) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for part in objects.chunks(HOME_PART) {
        let bytes: u64 = part.iter().map(|o| u64::from(o.loc.len)).sum();
        ins.execute(params![
            seq,
            &part[0].id.0[..],
            part.len() as u64,
            bytes,
            encode_homes(part)
        ])?;
    }
    Ok(())
}

/// [`Index::history_from`], in a transaction or not.
fn history_from(conn: &rusqlite::Connection) -> Result<Option<u64>> {
    let raw: Option<Vec<u8>> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([META_HISTORY_FROM], |r| r.get(0))
        .optional()?;
    raw.map(|v| {
        std::str::from_utf8(&v)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|&s| s > 1)
            .ok_or_else(|| {
                Error::corrupt(
                    "index meta",
                    format!("{META_HISTORY_FROM}: not a snapshot number above 1"),
                )
            })
    })
    .transpose()
}

fn put_meta(conn: &rusqlite::Connection, key: &str, value: Option<&[u8]>) -> Result<()> {
    match value {
        Some(v) => conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, v])?,
        None => conn
            .prepare_cached("DELETE FROM meta WHERE key = ?1")?
            .execute([key])?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of snapshot rows is one transaction: a snapshot in it that
    /// does not extend head leaves none of the batch (nor its durable
    /// point) behind; a good batch writes every snapshot in order.
    #[test]
    fn a_batch_of_snapshots_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("index.db"), true).unwrap();
        let env = |seq: u64| Envelope {
            format_version: 1,
            key_version: 1,
            agent_id: AgentId([7; 32]),
            sequence_number: seq,
            parent_snapshot: [seq as u8; 32],
            client_payload_hash: [0; 32],
            sealed: vec![seq as u8; 40],
            byte_size: 40,
            timestamp: 0,
        };
        let rows = |envs: &[Envelope], packs: &[(u32, u64)]| -> Vec<(Vec<(u32, u64)>, Envelope)> {
            envs.iter().map(|e| (packs.to_vec(), e.clone())).collect()
        };
        let write = |idx: &mut Index, batch: &[(Vec<(u32, u64)>, Envelope)], durable| {
            let b: Vec<SnapshotRows<'_>> = batch
                .iter()
                .map(|(p, e)| SnapshotRows {
                    objects: &[],
                    packs: p,
                    env: e,
                })
                .collect();
            idx.commit_batch(&b, durable)
        };
        write(&mut idx, &rows(&[env(1), env(2)], &[(1, 100)]), Some(2)).unwrap();
        assert_eq!(idx.head_seq().unwrap(), Some(2));
        assert_eq!(idx.durable_seq().unwrap(), Some(2));
        // Snapshot 6 does not extend 4: nothing of the batch is written.
        let bad = rows(&[env(3), env(4), env(5 + 1)], &[(1, 200)]);
        assert!(matches!(
            write(&mut idx, &bad, Some(4)),
            Err(Error::ChainBroken { seq: 6, .. })
        ));
        assert_eq!(idx.head_seq().unwrap(), Some(2));
        assert_eq!(idx.durable_seq().unwrap(), Some(2));
        assert_eq!(idx.packs().unwrap()[&1], 100);
        // Each snapshot's own pack lengths, the last one's standing.
        let mut good = rows(&[env(3)], &[(1, 150)]);
        good.extend(rows(&[env(4)], &[(1, 180), (2, 8)]));
        write(&mut idx, &good, None).unwrap();
        assert_eq!(idx.head_seq().unwrap(), Some(4));
        assert_eq!(idx.durable_seq().unwrap(), Some(2));
        let packs = idx.packs().unwrap();
        assert_eq!((packs[&1], packs[&2]), (180, 8));
        for seq in 1..=4 {
            assert_eq!(
                idx.envelope(&AgentId([7; 32]), seq).unwrap(),
                Some(env(seq))
            );
        }
    }

    /// Once a checkpointer exists, the writer leaves the WAL to it (it no
    /// longer checkpoints at SQLite's 1,000 pages), and a checkpoint copies
    /// every frame into the database, so the next commit writes the WAL
    /// from its start.
    #[test]
    fn the_writer_leaves_checkpoints_to_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index.db"), true).unwrap();
        let c = idx.checkpointer().unwrap();
        assert_eq!(idx.wal_autocheckpoint().unwrap(), WAL_BACKSTOP_PAGES);
        let write = |n: u32| {
            for i in 0..n {
                let key = format!("k{}", i % 64);
                let value = vec![i as u8; 8192];
                idx.set_meta_lazy(&[(key.as_str(), Some(&value))]).unwrap();
            }
        };
        write(1_000);
        let (frames, copied) = c.run().unwrap().expect("nothing in the way");
        assert!(
            frames > 1_000,
            "the writer checkpointed itself: {frames} frames"
        );
        assert_eq!(copied, frames, "every frame is in the database");
        write(1);
        let (frames, _) = c.run().unwrap().expect("nothing in the way");
        assert!(frames < 10, "the WAL started over: {frames} frames");
    }

    /// Each write runs at the `synchronous` level it needs, whatever the
    /// write before it left: lazy markers and snapshot commits at NORMAL,
    /// every other write at FULL (planted: `forget` without its level
    /// runs at NORMAL after a lazy marker, and this fails).
    #[test]
    fn every_write_runs_at_its_synchronous_level() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = Index::open(&dir.path().join("index.db"), true).unwrap();
        let level = |idx: &Index| -> i64 {
            idx.conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        let (normal, full) = (1, 2);
        assert_eq!(level(&idx), full, "a new connection");
        type Write<'a> = &'a dyn Fn(&Index);
        let durable_writes: [(&str, Write); 7] = [
            ("set_meta", &|i| i.set_meta("k", Some(b"v")).unwrap()),
            ("mark_durable", &|i| i.mark_durable(0).unwrap()),
            ("forget", &|i| i.forget(&[]).unwrap()),
            ("set_pack_lengths", &|i| i.set_pack_lengths(&[]).unwrap()),
            ("set_pack_length", &|i| i.set_pack_length(1, 8).unwrap()),
            ("set_remote_pruned", &|i| i.set_remote_pruned(1).unwrap()),
            ("truncate_after", &|i| i.truncate_after(0).unwrap()),
        ];
        for (name, write) in durable_writes {
            idx.set_meta_lazy(&[("lazy", Some(b"1"))]).unwrap();
            assert_eq!(level(&idx), normal, "a lazy marker before {name}");
            write(&idx);
            assert_eq!(level(&idx), full, "{name} after a lazy marker");
            write(&idx);
            assert_eq!(level(&idx), full, "{name} twice");
        }
        idx.commit_batch(&[], Some(0)).unwrap();
        assert_eq!(level(&idx), normal, "a durable point with a batch");
    }

    /// A new index uses [`PAGE_BYTES`]; an existing one keeps its page
    /// size (4 KiB before it), even as it is migrated.
    #[test]
    fn a_new_index_has_small_pages_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |idx: &Index| -> u32 {
            idx.conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .unwrap()
        };
        let new = dir.path().join("new.db");
        assert_eq!(page_size(&Index::open(&new, true).unwrap()), PAGE_BYTES);
        assert_eq!(page_size(&Index::open(&new, true).unwrap()), PAGE_BYTES);
        let old = dir.path().join("old.db");
        {
            let c = Connection::open(&old).unwrap();
            c.pragma_update(None, "page_size", 4096).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.execute_batch("CREATE TABLE t (x)").unwrap();
        }
        assert_eq!(page_size(&Index::open(&old, true).unwrap()), 4096);
    }

    /// A query by sequence number keeps its plan for every value: with
    /// plans that depend on bound values SQLite prepared it again at each
    /// new one (planted: without `SQLITE_DBCONFIG_ENABLE_QPSG`, this
    /// fails).
    #[test]
    fn a_query_by_sequence_number_is_not_prepared_again_per_value() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("index.db"), true).unwrap();
        for seq in 1..50 {
            idx.objects_of(seq).unwrap();
        }
        let st = idx.conn.prepare_cached(OWN_OBJECTS_OF).unwrap();
        assert_eq!(st.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    /// A steady writer, the checkpointer beside it on a thread of its own:
    /// the WAL stays near [`WAL_RESTART_FRAMES`]. A passive checkpoint
    /// alone seldom completes between such commits, and the WAL would grow
    /// to the backstop (planted: ~16,300 frames against ~2,300, in every
    /// try). The checkpointer needs the CPU to keep up, and the tests
    /// beside this one on two cores can take it for a while (once 11,835
    /// frames in CI): up to three tries, one of which must stay short.
    #[test]
    fn the_checkpointer_keeps_the_wal_short_beside_a_steady_writer() {
        let most_frames = || {
            let dir = tempfile::tempdir().unwrap();
            let idx = Index::open(&dir.path().join("index.db"), true).unwrap();
            let c = idx.checkpointer().unwrap();
            let done = &std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                let checkpoints = s.spawn(move || {
                    let mut most = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        if let Some((frames, _)) = c.run().unwrap() {
                            most = most.max(frames);
                        }
                    }
                    most
                });
                for i in 0..6_000u32 {
                    let key = format!("k{}", i % 64);
                    let value = vec![i as u8; 8192];
                    idx.set_meta_lazy(&[(key.as_str(), Some(&value))]).unwrap();
                    // A mount's commits come between FUSE requests.
                    std::thread::sleep(Duration::from_micros(100));
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                checkpoints.join().unwrap()
            })
        };
        let mut tries = Vec::new();
        while tries.len() < 3 {
            let most = most_frames();
            tries.push(most);
            if most < 3 * WAL_RESTART_FRAMES {
                return;
            }
            eprintln!("try {}: the WAL grew to {most} frames", tries.len());
        }
        panic!("the WAL grew to {tries:?} frames in each try");
    }
}
