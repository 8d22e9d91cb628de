//! The SQLite store behind [`Catalog`]. One connection behind a mutex: catalog operations are
//! small and rare next to query execution, and SQLite serialises writers anyway.

mod jobs;
mod lineage;
mod migrations;
mod quality;
mod secrets;

pub use lineage::ColumnEdge;

use crate::ObjectClass;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{
    CatalogObject, ColumnDef, Error, NewObject, ObjectKind, ObjectName, Result, Run, RunOutcome,
    RunStatus,
};

/// The durable catalog. Cheap to share behind an `Arc`.
pub struct Catalog {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

const OBJECT_COLUMNS: &str = "id, schema_name, name, kind, sql, query, options, columns, \
     location, comment, published_version, created_at, updated_at, default_schema";

const RUN_COLUMNS: &str = "id, object_id, object_name, trigger, strategy, reason, status, \
     started_at, finished_at, rows_read, rows_written, delta_version, input_versions, error, late_rows";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Catalog {
    /// Opens (creating if needed) the SQLite catalog at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::from_connection(conn)
    }

    /// A catalog that lives in memory only (tests).
    pub fn open_in_memory() -> Result<Self> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A number that grows with every write to the catalog (SQLite's count of rows changed on
    /// its one connection): whatever was read from the catalog while it stayed the same is
    /// still current. Prepared statements keep their plans on it.
    pub fn change_count(&self) -> u64 {
        self.conn().total_changes()
    }

    // ---- schemas -------------------------------------------------------------------------

    pub fn schemas(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM schemas ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn schema_exists(&self, name: &str) -> Result<bool> {
        let conn = self.conn();
        Ok(conn
            .query_row("SELECT 1 FROM schemas WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Creates a schema; returns `false` when it already existed and `if_not_exists` was set.
    pub fn create_schema(&self, name: &str, if_not_exists: bool) -> Result<bool> {
        let conn = self.conn();
        let inserted = conn.execute(
            "INSERT INTO schemas (name, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![name, now()],
        )?;
        if inserted == 0 && !if_not_exists {
            return Err(Error::Duplicate {
                kind: ObjectClass::Schema,
                name: name.to_string(),
            });
        }
        Ok(inserted == 1)
    }

    /// Drops an empty schema. The engine drops its objects first for `CASCADE`.
    pub fn drop_schema(&self, name: &str) -> Result<()> {
        let conn = self.conn();
        let members: Vec<String> = conn
            .prepare("SELECT name FROM objects WHERE schema_name = ?1 ORDER BY name")?
            .query_map([name], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if !members.is_empty() {
            return Err(Error::HasDependents {
                kind: ObjectClass::Schema,
                name: name.to_string(),
                dependents: members.iter().map(|m| format!("{name}.{m}")).collect(),
            });
        }
        if conn.execute("DELETE FROM schemas WHERE name = ?1", [name])? == 0 {
            return Err(Error::NotFound {
                kind: ObjectClass::Schema,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    // ---- objects -------------------------------------------------------------------------

    pub fn objects(&self) -> Result<Vec<CatalogObject>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects ORDER BY schema_name, name"
        ))?;
        let rows = stmt.query_map([], read_object)?;
        rows.map(|r| r?).collect()
    }

    pub fn object(&self, name: &ObjectName) -> Result<Option<CatalogObject>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE schema_name = ?1 AND name = ?2"
        ))?;
        stmt.query_row(params![name.schema, name.name], read_object)
            .optional()?
            .transpose()
    }

    pub fn object_by_id(&self, id: i64) -> Result<Option<CatalogObject>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE id = ?1"
        ))?;
        stmt.query_row([id], read_object).optional()?.transpose()
    }

    /// Records a new object and the objects it reads from, in one transaction.
    pub fn create_object(&self, new: &NewObject, upstream: &[i64]) -> Result<CatalogObject> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        ensure_schema(&tx, &new.name.schema)?;
        if let Some(kind) = existing_kind(&tx, &new.name)? {
            return Err(Error::Duplicate {
                kind: kind.into(),
                name: new.name.to_string(),
            });
        }
        let ts = now();
        tx.execute(
            "INSERT INTO objects (schema_name, name, kind, sql, query, options, columns, location, \
             comment, published_version, created_at, updated_at, default_schema) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?10, ?11)",
            params![
                new.name.schema,
                new.name.name,
                new.kind.as_str(),
                new.sql,
                new.query,
                serde_json::to_string(&new.options)?,
                serde_json::to_string(&new.columns)?,
                new.location,
                new.comment,
                ts,
                new.default_schema
            ],
        )?;
        let id = tx.last_insert_rowid();
        write_upstream(&tx, id, upstream)?;
        tx.commit()?;
        drop(conn);
        self.object_by_id(id)?
            .ok_or_else(|| Error::Corrupt("object vanished".into()))
    }

    /// Replaces an object's definition in place, keeping its id (and so its dependents).
    /// A new storage location starts unpublished.
    pub fn replace_object(&self, id: i64, new: &NewObject, upstream: &[i64]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE objects SET kind = ?2, sql = ?3, query = ?4, options = ?5, columns = ?6, \
             published_version = CASE WHEN location IS ?7 THEN published_version ELSE NULL END, \
             location = ?7, comment = COALESCE(?8, comment), updated_at = ?9, \
             default_schema = ?10 WHERE id = ?1",
            params![
                id,
                new.kind.as_str(),
                new.sql,
                new.query,
                serde_json::to_string(&new.options)?,
                serde_json::to_string(&new.columns)?,
                new.location,
                new.comment,
                now(),
                new.default_schema
            ],
        )?;
        tx.execute("DELETE FROM dependencies WHERE object_id = ?1", [id])?;
        write_upstream(&tx, id, upstream)?;
        tx.commit()?;
        Ok(())
    }

    /// Drops the given objects in one transaction. Fails with [`Error::HasDependents`] when an
    /// object that stays depends on one of them (the engine expands `CASCADE` beforehand).
    pub fn drop_objects(&self, ids: &[i64]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for &id in ids {
            let outside: Vec<String> = tx
                .prepare(
                    "SELECT o.id, o.schema_name || '.' || o.name FROM dependencies d \
                     JOIN objects o ON o.id = d.object_id WHERE d.upstream_id = ?1",
                )?
                .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
                .filter_map(|r| match r {
                    Ok((dep, name)) if !ids.contains(&dep) => Some(Ok(name)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?;
            if !outside.is_empty() {
                let (kind, name) = tx.query_row(
                    "SELECT kind, schema_name || '.' || name FROM objects WHERE id = ?1",
                    [id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )?;
                return Err(Error::HasDependents {
                    kind: ObjectKind::parse(&kind).map_or(ObjectClass::Object, ObjectClass::from),
                    name,
                    dependents: outside,
                });
            }
        }
        for &id in ids {
            tx.execute("DELETE FROM dependencies WHERE object_id = ?1", [id])?;
            lineage::forget(&tx, id)?;
            quality::forget_object(&tx, id)?;
        }
        for &id in ids {
            tx.execute("DELETE FROM objects WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every dependency edge as `(downstream id, upstream id)`.
    pub fn dependencies(&self) -> Result<Vec<(i64, i64)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT object_id, upstream_id FROM dependencies ORDER BY 1, 2")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_published_version(&self, id: i64, version: i64) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE objects SET published_version = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, version, now()],
        )?;
        Ok(())
    }

    pub fn set_columns(&self, id: i64, columns: &[ColumnDef]) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE objects SET columns = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, serde_json::to_string(columns)?, now()],
        )?;
        Ok(())
    }

    pub fn set_comment(&self, id: i64, comment: Option<&str>) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE objects SET comment = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, comment, now()],
        )?;
        Ok(())
    }

    // ---- runs ----------------------------------------------------------------------------

    /// Records the start of a refresh run and returns its id.
    pub fn start_run(&self, object: &CatalogObject, trigger: &str) -> Result<i64> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (object_id, object_name, trigger, status, started_at) \
             VALUES (?1, ?2, ?3, 'running', ?4)",
            params![object.id, object.name.to_string(), trigger, now()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records a skipped run (an upstream failed), which starts and ends at once.
    pub fn skip_run(&self, object: &CatalogObject, trigger: &str, reason: &str) -> Result<i64> {
        let conn = self.conn();
        let ts = now();
        conn.execute(
            "INSERT INTO runs (object_id, object_name, trigger, status, reason, started_at, \
             finished_at) VALUES (?1, ?2, ?3, 'skipped', ?4, ?5, ?5)",
            params![object.id, object.name.to_string(), trigger, reason, ts],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run_id: i64, outcome: &RunOutcome) -> Result<()> {
        let conn = self.conn();
        let status = outcome.status.unwrap_or(RunStatus::Succeeded);
        conn.execute(
            "UPDATE runs SET status = ?2, strategy = ?3, reason = ?4, rows_read = ?5, \
             rows_written = ?6, delta_version = ?7, input_versions = ?8, error = ?9, \
             finished_at = ?10, late_rows = ?11 WHERE id = ?1",
            params![
                run_id,
                status.as_str(),
                outcome.strategy,
                outcome.reason,
                outcome.rows_read,
                outcome.rows_written,
                outcome.delta_version,
                outcome.input_versions,
                outcome.error,
                now(),
                outcome.late_rows
            ],
        )?;
        Ok(())
    }

    pub fn runs(&self) -> Result<Vec<Run>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id"))?;
        let rows = stmt.query_map([], read_run)?;
        rows.map(|r| r?).collect()
    }

    /// Each model's last successful refresh: its name and that run's `finished_at` (models
    /// that never refreshed successfully are left out).
    pub fn last_successful_refreshes(&self) -> Result<Vec<(ObjectName, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT o.schema_name, o.name, max(r.finished_at) FROM objects o \
             JOIN runs r ON r.object_id = o.id \
             WHERE o.kind = 'model' AND r.status = 'succeeded' AND r.finished_at IS NOT NULL \
             GROUP BY o.id ORDER BY o.schema_name, o.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                ObjectName::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                r.get::<_, String>(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The latest `limit` runs of one object, oldest first (what the scheduler looks at).
    pub fn latest_runs(&self, object_id: i64, limit: usize) -> Result<Vec<Run>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE object_id = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![object_id, limit as i64], read_run)?;
        let mut runs = rows.map(|r| r?).collect::<Result<Vec<_>>>()?;
        runs.reverse();
        Ok(runs)
    }

    /// Runs still marked `running` (after a crash these were interrupted).
    pub fn running_runs(&self) -> Result<Vec<Run>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], read_run)?;
        rows.map(|r| r?).collect()
    }
}

fn ensure_schema(tx: &rusqlite::Transaction<'_>, schema: &str) -> Result<()> {
    let exists = tx
        .query_row(
            "SELECT 1 FROM schemas WHERE name = ?1",
            [schema],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if exists {
        Ok(())
    } else {
        Err(Error::NotFound {
            kind: ObjectClass::Schema,
            name: schema.to_string(),
        })
    }
}

fn existing_kind(tx: &rusqlite::Transaction<'_>, name: &ObjectName) -> Result<Option<ObjectKind>> {
    let kind: Option<String> = tx
        .query_row(
            "SELECT kind FROM objects WHERE schema_name = ?1 AND name = ?2",
            params![name.schema, name.name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(kind.and_then(|k| ObjectKind::parse(&k)))
}

fn write_upstream(tx: &rusqlite::Transaction<'_>, id: i64, upstream: &[i64]) -> Result<()> {
    for up in upstream {
        tx.execute(
            "INSERT OR IGNORE INTO dependencies (object_id, upstream_id) VALUES (?1, ?2)",
            params![id, up],
        )?;
    }
    Ok(())
}

fn read_object(r: &Row<'_>) -> rusqlite::Result<Result<CatalogObject>> {
    let kind: String = r.get(3)?;
    let options: String = r.get(6)?;
    let columns: String = r.get(7)?;
    let build = || -> Result<CatalogObject> {
        Ok(CatalogObject {
            id: r.get(0)?,
            name: ObjectName::new(r.get::<_, String>(1)?, r.get::<_, String>(2)?),
            kind: ObjectKind::parse(&kind)
                .ok_or_else(|| Error::Corrupt(format!("unknown object kind {kind}")))?,
            sql: r.get(4)?,
            query: r.get(5)?,
            options: serde_json::from_str::<BTreeMap<String, String>>(&options)?,
            columns: serde_json::from_str::<Vec<ColumnDef>>(&columns)?,
            location: r.get(8)?,
            comment: r.get(9)?,
            published_version: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
            default_schema: r.get(13)?,
        })
    };
    Ok(build())
}

fn read_run(r: &Row<'_>) -> rusqlite::Result<Result<Run>> {
    let status: String = r.get(6)?;
    let build = || -> Result<Run> {
        Ok(Run {
            id: r.get(0)?,
            object_id: r.get(1)?,
            object_name: r.get(2)?,
            trigger: r.get(3)?,
            strategy: r.get(4)?,
            reason: r.get(5)?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| Error::Corrupt(format!("unknown run status {status}")))?,
            started_at: r.get(7)?,
            finished_at: r.get(8)?,
            rows_read: r.get(9)?,
            rows_written: r.get(10)?,
            delta_version: r.get(11)?,
            input_versions: r.get(12)?,
            error: r.get(13)?,
            late_rows: r.get(14)?,
        })
    };
    Ok(build())
}
