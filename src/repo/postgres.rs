//! The PostgreSQL driver (seed 000's third adapter): `postgres://` remotes.
//!
//! It is an [`ObjectStore`] over one table, so that [`super::remote::Remote`]
//! (envelopes, pack parts, checkpoints, forget and redaction records) works
//! on it unchanged and passes the same driver suite as memory, file and S3:
//!
//! ```sql
//! CREATE TABLE sovseal_objects (path TEXT COLLATE "C" PRIMARY KEY,
//!                               data BYTEA NOT NULL, modified_ms BIGINT NOT NULL)
//! ```
//!
//! - Conditional create (`PutMode::Create`, the fence two writers of one
//!   agent meet at) is `INSERT … ON CONFLICT DO NOTHING`: the primary key
//!   decides, in one statement, which writer wins.
//! - Listing is an index range scan in byte order (`COLLATE "C"`), so a
//!   prefix is exactly the keys between `prefix/` and `prefix0`.
//! - Rows hold what every remote holds: sealed bytes and their names
//!   (agent id, sequence numbers, envelope hashes), never plaintext. The
//!   connection is made without TLS (`tokio-postgres` with `NoTls`): use a
//!   Unix socket or loopback, or a tunnel; `sslmode=require` fails to
//!   connect rather than falling back.
//!
//! Client: `tokio-postgres`, the maintained asynchronous client of the
//! rust-postgres project: a small dependency tree, pipelined queries on one
//! connection, no query macros or compile-time database. Its connection
//! task runs on a runtime this driver owns (one thread), because a remote
//! is used from the short-lived runtimes of commands, tests and the
//! replicator alike; each call is spawned there and awaited from the
//! caller's runtime. Calls take the store's [`CONNECTIONS`] connections in
//! turn, so that the pack parts of a snapshot, uploaded several at once, are
//! written by as many server processes instead of queueing on one. A
//! connection that closed (server restart) is made again at its next call.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_postgres::Client;

const STORE: &str = "postgres";

type Param = dyn tokio_postgres::types::ToSql + Sync;

/// How long a connection may take to open, unless the URL says
/// (`connect_timeout=`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections per store, taken by calls in turn (each made at its first
/// call). Every call is one statement in autocommit and is awaited before
/// anything that depends on it is sent, so no order is lost across them.
pub const CONNECTIONS: usize = 2;

/// How long one call may take (an 8 MiB pack part included) before it
/// fails, its connection is dropped and the next call connects again: a
/// server that stops answering must not hang replication or a
/// `--sync-replication` fsync forever.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The one table, created at the first connection if missing (a role
/// without CREATE on the schema can use a table an administrator made).
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sovseal_objects (
    path TEXT COLLATE \"C\" PRIMARY KEY,
    data BYTEA NOT NULL,
    modified_ms BIGINT NOT NULL)";

/// An object store in one PostgreSQL table.
pub struct PgStore {
    inner: Arc<Inner>,
}

/// What a store's calls and streams share.
struct Inner {
    config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
    handle: tokio::runtime::Handle,
    clients: Mutex<[Option<Arc<Client>>; CONNECTIONS]>,
    /// The connection the next call takes.
    next: AtomicUsize,
    /// Ends the driver's runtime thread when the store is dropped.
    _stop: futures::channel::oneshot::Sender<()>,
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn meta(location: Path, size: i64, modified_ms: i64) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: chrono::DateTime::from_timestamp_millis(modified_ms).unwrap_or_default(),
        size: size.max(0) as u64,
        e_tag: None,
        version: None,
    }
}

fn not_found(path: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: path.to_string(),
        source: "no such object".into(),
    }
}

/// The key range `[from, to)` holding every object under `prefix`; none
/// for the whole table.
fn range_of(prefix: Option<&Path>) -> Option<(String, String)> {
    prefix
        .map(|p| p.as_ref())
        .filter(|p| !p.is_empty())
        // '0' is the byte after '/'.
        .map(|p| (format!("{p}/"), format!("{p}0")))
}

impl PgStore {
    /// Connects to the database `url` names (`postgres://user@host/db`,
    /// or `postgres:///db?host=/run/postgresql` for a Unix socket) and
    /// creates the table if it is missing.
    pub fn connect(url: &str) -> Result<Self, String> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true);
        // So that an administrator sees who holds the sessions.
        if config.get_application_name().is_none() {
            config.application_name("sovseal");
        }
        let shown = super::remote::shown(url);
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sovseal-postgres".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| format!("driver thread: {e}"))?;
        let handle = rx.recv().map_err(|_| "driver thread ended".to_string())??;
        let inner = Arc::new(Inner {
            config,
            shown,
            handle,
            clients: Mutex::new(Default::default()),
            next: AtomicUsize::new(0),
            _stop: stop,
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let first = inner.clone();
        inner.handle.spawn(async move {
            let _ = tx.send(first.client(0).await.map(|_| ()));
        });
        rx.recv()
            .map_err(|_| "driver thread ended".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(PgStore { inner })
    }
}

impl Inner {
    /// Connection `slot`, made (again) if there is none or it closed.
    async fn client(&self, slot: usize) -> object_store::Result<Arc<Client>> {
        if let Some(c) = self.clients.lock().expect("clients")[slot].as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let config = self.config.clone();
        let c = self
            .on_driver(slot, async move {
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(generic)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::warn!("postgres remote: connection ended: {e}");
                    }
                });
                let exists = client
                    .query_one("SELECT to_regclass('sovseal_objects') IS NOT NULL", &[])
                    .await
                    .map_err(generic)?
                    .get::<_, bool>(0);
                if !exists && let Err(e) = client.batch_execute(SCHEMA).await {
                    // Another client created it at the same moment.
                    use tokio_postgres::error::SqlState;
                    let raced = e.code().is_some_and(|c| {
                        *c == SqlState::DUPLICATE_TABLE || *c == SqlState::UNIQUE_VIOLATION
                    });
                    if !raced {
                        return Err(generic(e));
                    }
                }
                Ok(Arc::new(client))
            })
            .await?;
        self.clients.lock().expect("clients")[slot] = Some(c.clone());
        Ok(c)
    }

    /// Runs `f`, a call on connection `slot`, on the driver's runtime (where
    /// the connections live) and waits for it from any runtime.
    async fn on_driver<T: Send + 'static>(
        &self,
        slot: usize,
        f: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let timed = async move { tokio::time::timeout(CALL_TIMEOUT, f).await };
        match self.handle.spawn(timed).await.map_err(generic)? {
            Ok(r) => r,
            Err(elapsed) => {
                // The connection may hang on: the next call makes a new one.
                self.clients.lock().expect("clients")[slot] = None;
                Err(generic(elapsed))
            }
        }
    }

    /// Runs `f` with the next connection in turn on the driver's runtime.
    async fn with_client<T: Send + 'static, F>(
        &self,
        f: impl FnOnce(Arc<Client>) -> F,
    ) -> object_store::Result<T>
    where
        F: Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % CONNECTIONS;
        let c = self.client(slot).await?;
        self.on_driver(slot, f(c)).await
    }

    /// Up to [`LIST_PAGE`] rows in `range` (all rows: `None`) after the
    /// path `after`, in path order, and the last path read (`None`: the
    /// page was the last one).
    async fn list_page(
        &self,
        range: Option<(String, String)>,
        after: String,
    ) -> object_store::Result<ListPage> {
        self.with_client(move |c| async move {
            let rows = match &range {
                Some((from, to)) => {
                    c.query(
                        "SELECT path, length(data)::BIGINT, modified_ms FROM sovseal_objects
                         WHERE path >= $1 AND path < $2 AND path > $3 ORDER BY path LIMIT $4",
                        &[from, to, &after, &LIST_PAGE],
                    )
                    .await
                }
                None => {
                    c.query(
                        "SELECT path, length(data)::BIGINT, modified_ms FROM sovseal_objects
                         WHERE path > $1 ORDER BY path LIMIT $2",
                        &[&after, &LIST_PAGE],
                    )
                    .await
                }
            }
            .map_err(generic)?;
            let last = (rows.len() as i64 == LIST_PAGE)
                .then(|| rows.last().map(|r| r.get::<_, String>(0)))
                .flatten();
            let metas = rows
                .iter()
                .map(|r| {
                    let p: String = r.get(0);
                    // A name no store could write: as the other stores
                    // report it.
                    let location = Path::parse(&p)
                        .map_err(|source| object_store::Error::InvalidPath { source })?;
                    Ok(meta(location, r.get(1), r.get(2)))
                })
                .collect();
            Ok((metas, last))
        })
        .await
    }
}

/// One page of a listing: its entries, and where the next page starts.
type ListPage = (Vec<object_store::Result<ObjectMeta>>, Option<String>);

/// Rows one listing query reads: a listing streams page by page (keyset
/// pagination on the primary key), so neither the server nor this process
/// holds a whole table's listing, and a caller that stops early (is there
/// any envelope?) reads one page.
const LIST_PAGE: i64 = 1000;

/// The entries under `prefix` after the path `after` ("": from the
/// first), in path order, one query per [`LIST_PAGE`] when polled.
fn listing(
    inner: Arc<Inner>,
    prefix: Option<Path>,
    after: String,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let range = range_of(prefix.as_ref());
    futures::stream::try_unfold(Some(after), move |after| {
        let (inner, range) = (inner.clone(), range.clone());
        async move {
            let Some(after) = after else {
                return Ok::<_, object_store::Error>(None);
            };
            let (metas, next) = inner.list_page(range, after).await?;
            Ok(Some((futures::stream::iter(metas), next)))
        }
    })
    .try_flatten()
    .boxed()
}

impl std::fmt::Display for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.inner.shown)
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for PgStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let sql = match opts.mode {
            PutMode::Create => {
                "INSERT INTO sovseal_objects (path, data, modified_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (path) DO NOTHING"
            }
            PutMode::Overwrite => {
                "INSERT INTO sovseal_objects (path, data, modified_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (path) DO UPDATE SET data = EXCLUDED.data, modified_ms = EXCLUDED.modified_ms"
            }
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "put_opts with PutMode::Update".into(),
                    implementer: STORE.into(),
                });
            }
        };
        let mut data = Vec::with_capacity(payload.content_length());
        for b in payload.iter() {
            data.extend_from_slice(b);
        }
        let path = location.to_string();
        let n = self
            .inner
            .with_client(move |c| async move {
                let ms = now_ms();
                let params: [&Param; 3] = [&path, &data, &ms];
                c.execute(sql, &params).await.map_err(generic)
            })
            .await?;
        if n == 0 {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "an object of that name exists".into(),
            });
        }
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    /// Not offered: [`super::remote::Remote`] uploads each pack part with
    /// one put.
    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(object_store::Error::NotImplemented {
            operation: "put_multipart_opts".into(),
            implementer: STORE.into(),
        })
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let path = location.to_string();
        let head = options.head;
        // A bounded range is cut by the server (a lazy restore's fetch of
        // one object reads its bytes, not the whole pack part).
        let bounded = match &options.range {
            Some(object_store::GetRange::Bounded(r)) if !head && r.start < r.end => {
                Some((r.start as i64 + 1, (r.end - r.start) as i64))
            }
            _ => None,
        };
        let row = self
            .inner
            .with_client(move |c| async move {
                let r = match bounded {
                    Some((from, len)) => {
                        c.query_opt(
                            "SELECT substring(data FROM $2::BIGINT::INT FOR $3::BIGINT::INT), length(data)::BIGINT, modified_ms FROM sovseal_objects WHERE path = $1",
                            &[&path, &from, &len],
                        )
                        .await
                    }
                    None if head => {
                        c.query_opt(
                            "SELECT NULL::BYTEA, length(data)::BIGINT, modified_ms FROM sovseal_objects WHERE path = $1",
                            &[&path],
                        )
                        .await
                    }
                    None => {
                        c.query_opt(
                            "SELECT data, length(data)::BIGINT, modified_ms FROM sovseal_objects WHERE path = $1",
                            &[&path],
                        )
                        .await
                    }
                }
                .map_err(generic)?;
                Ok(r.map(|r| {
                    (
                        r.get::<_, Option<Vec<u8>>>(0),
                        r.get::<_, i64>(1),
                        r.get::<_, i64>(2),
                    )
                }))
            })
            .await?;
        let Some((data, size, modified)) = row else {
            return Err(not_found(location));
        };
        let m = meta(location.clone(), size, modified);
        options.check_preconditions(&m)?;
        let range = match &options.range {
            Some(r) => r.as_range(m.size).map_err(generic)?,
            None => 0..m.size,
        };
        let body = match data {
            // Cut by the server already: exactly the range, or it is not
            // the range that was asked for.
            Some(d) if bounded.is_some() => {
                if d.len() as u64 != range.end - range.start {
                    return Err(generic(std::io::Error::other(format!(
                        "range {range:?} of {location}: {} bytes came",
                        d.len()
                    ))));
                }
                Bytes::from(d)
            }
            Some(d) => Bytes::from(d).slice(range.start as usize..range.end as usize),
            None => Bytes::new(),
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(
                futures::stream::once(async move { Ok(body) }).boxed(),
            ),
            meta: m,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        locations
            .then(move |p| {
                let inner = inner.clone();
                async move {
                    let p = p?;
                    let path = p.to_string();
                    let n = inner
                        .with_client(move |c| async move {
                            c.execute("DELETE FROM sovseal_objects WHERE path = $1", &[&path])
                                .await
                                .map_err(generic)
                        })
                        .await?;
                    if n == 0 {
                        return Err(not_found(&p));
                    }
                    Ok(p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        listing(self.inner.clone(), prefix.cloned(), String::new())
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        listing(self.inner.clone(), prefix.cloned(), offset.to_string())
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let depth = prefix.map_or(0, |p| p.parts().count());
        let mut objects = Vec::new();
        let mut common = std::collections::BTreeSet::new();
        let mut all = listing(self.inner.clone(), prefix.cloned(), String::new());
        while let Some(m) = all.next().await {
            let m = m?;
            let parts: Vec<_> = m.location.parts().collect();
            if parts.len() == depth + 1 {
                objects.push(m);
            } else if parts.len() > depth + 1 {
                common.insert(Path::from_iter(parts.into_iter().take(depth + 1)));
            }
        }
        Ok(ListResult {
            common_prefixes: common.into_iter().collect(),
            objects,
            extensions: Default::default(),
        })
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let create = matches!(options.mode, CopyMode::Create);
        let (src, dst) = (from.to_string(), to.to_string());
        let (copied, exists) = self
            .inner
            .with_client(move |c| async move {
                let sql = if create {
                    "INSERT INTO sovseal_objects (path, data, modified_ms)
                     SELECT $2, data, $3 FROM sovseal_objects WHERE path = $1
                     ON CONFLICT (path) DO NOTHING"
                } else {
                    "INSERT INTO sovseal_objects (path, data, modified_ms)
                     SELECT $2, data, $3 FROM sovseal_objects WHERE path = $1
                     ON CONFLICT (path) DO UPDATE SET data = EXCLUDED.data, modified_ms = EXCLUDED.modified_ms"
                };
                let n = c
                    .execute(sql, &[&src as &Param, &dst, &now_ms()])
                    .await
                    .map_err(generic)?;
                let exists = c
                    .query_opt("SELECT 1 FROM sovseal_objects WHERE path = $1", &[&src])
                    .await
                    .map_err(generic)?
                    .is_some();
                Ok((n, exists))
            })
            .await?;
        match (copied, exists) {
            (0, false) => Err(not_found(from)),
            (0, true) => Err(object_store::Error::AlreadyExists {
                path: to.to_string(),
                source: "an object of that name exists".into(),
            }),
            _ => Ok(()),
        }
    }
}
