//! Secrets and connections in the SQLite store. A secret or connection that something uses
//! cannot be dropped (the engine expands `CASCADE` first): connections use secrets for their
//! password, sources name their connection (`options.connection`) and may name secrets in
//! options whose key ends in `secret` (`headers_secret`).

use crate::ObjectClass;
use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row, params};

use super::now;
use crate::secrets::{Connection, Secret, SecretSource, SecretValue};
use crate::{Catalog, Error, Result};

impl Catalog {
    /// Creates (or with `or_replace`, replaces the value of) a secret. Returns `false` when it
    /// already existed and `if_not_exists` was set.
    pub fn create_secret(
        &self,
        name: &str,
        source: &SecretSource,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool> {
        let conn = self.conn();
        let (kind, value) = match source {
            SecretSource::Env(var) => ("env", var.as_str()),
            SecretSource::Literal(value) => ("literal", value.expose()),
        };
        let sql = if or_replace {
            "INSERT INTO secrets (name, kind, value, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, value = excluded.value"
        } else {
            "INSERT INTO secrets (name, kind, value, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING"
        };
        let inserted = conn.execute(sql, params![name, kind, value, now()])?;
        if inserted == 0 && !if_not_exists {
            return Err(Error::Duplicate {
                kind: ObjectClass::Secret,
                name: name.to_string(),
            });
        }
        Ok(inserted == 1)
    }

    pub fn secret(&self, name: &str) -> Result<Option<Secret>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT name, kind, value, created_at FROM secrets WHERE name = ?1",
            [name],
            read_secret,
        )
        .optional()?
        .transpose()
    }

    pub fn secrets(&self) -> Result<Vec<Secret>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, kind, value, created_at FROM secrets ORDER BY name")?;
        let rows = stmt.query_map([], read_secret)?;
        rows.map(|r| r?).collect()
    }

    /// What uses a secret: connections (`connection x`) and objects (`source s.x`).
    pub fn secret_dependents(&self, name: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut out: Vec<String> = conn
            .prepare("SELECT name FROM connections WHERE password_secret = ?1 ORDER BY name")?
            .query_map([name], |r| r.get::<_, String>(0))?
            .map(|r| r.map(|n| format!("connection {n}")))
            .collect::<rusqlite::Result<_>>()?;
        let objects: Vec<String> = conn
            .prepare(
                "SELECT DISTINCT o.kind || ' ' || o.schema_name || '.' || o.name \
                 FROM objects o, json_each(o.options) j \
                 WHERE j.key LIKE '%secret' AND j.value = ?1 ORDER BY 1",
            )?
            .query_map([name], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        out.extend(objects);
        Ok(out)
    }

    /// Drops a secret nothing uses (see [`Self::secret_dependents`]).
    pub fn drop_secret(&self, name: &str) -> Result<()> {
        let dependents = self.secret_dependents(name)?;
        if !dependents.is_empty() {
            return Err(Error::HasDependents {
                kind: ObjectClass::Secret,
                name: name.to_string(),
                dependents,
            });
        }
        let conn = self.conn();
        if conn.execute("DELETE FROM secrets WHERE name = ?1", [name])? == 0 {
            return Err(Error::NotFound {
                kind: ObjectClass::Secret,
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Creates (or with `or_replace`, redefines) a connection; its password secret must exist.
    /// Returns `false` when it already existed and `if_not_exists` was set.
    pub fn create_connection(
        &self,
        connection: &Connection,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<bool> {
        let conn = self.conn();
        if let Some(secret) = &connection.password_secret {
            let exists = conn
                .query_row(
                    "SELECT 1 FROM secrets WHERE name = ?1",
                    [secret],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(Error::NotFound {
                    kind: ObjectClass::Secret,
                    name: secret.clone(),
                });
            }
        }
        let sql = if or_replace {
            "INSERT INTO connections (name, kind, options, password_secret, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
             options = excluded.options, password_secret = excluded.password_secret"
        } else {
            "INSERT INTO connections (name, kind, options, password_secret, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING"
        };
        let inserted = conn.execute(
            sql,
            params![
                connection.name,
                connection.kind,
                serde_json::to_string(&connection.options)?,
                connection.password_secret,
                now()
            ],
        )?;
        if inserted == 0 && !if_not_exists {
            return Err(Error::Duplicate {
                kind: ObjectClass::Connection,
                name: connection.name.clone(),
            });
        }
        Ok(inserted == 1)
    }

    pub fn connection(&self, name: &str) -> Result<Option<Connection>> {
        let conn = self.conn();
        conn.query_row(
            "SELECT name, kind, options, password_secret, created_at FROM connections \
             WHERE name = ?1",
            [name],
            read_connection,
        )
        .optional()?
        .transpose()
    }

    pub fn connections(&self) -> Result<Vec<Connection>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, kind, options, password_secret, created_at FROM connections \
             ORDER BY name",
        )?;
        let rows = stmt.query_map([], read_connection)?;
        rows.map(|r| r?).collect()
    }

    /// The ids of the objects (sources) that read through a connection.
    pub fn connection_dependents(&self, name: &str) -> Result<Vec<i64>> {
        let conn = self.conn();
        let ids = conn
            .prepare(
                "SELECT id FROM objects WHERE json_extract(options, '$.connection') = ?1 \
                 ORDER BY id",
            )?
            .query_map([name], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Drops a connection no source uses.
    pub fn drop_connection(&self, name: &str) -> Result<()> {
        let ids = self.connection_dependents(name)?;
        if !ids.is_empty() {
            let mut dependents = Vec::new();
            for id in ids {
                if let Some(o) = self.object_by_id(id)? {
                    dependents.push(o.name.to_string());
                }
            }
            return Err(Error::HasDependents {
                kind: ObjectClass::Connection,
                name: name.to_string(),
                dependents,
            });
        }
        let conn = self.conn();
        if conn.execute("DELETE FROM connections WHERE name = ?1", [name])? == 0 {
            return Err(Error::NotFound {
                kind: ObjectClass::Connection,
                name: name.to_string(),
            });
        }
        Ok(())
    }
}

fn read_secret(r: &Row<'_>) -> rusqlite::Result<Result<Secret>> {
    let kind: String = r.get(1)?;
    let value: String = r.get(2)?;
    let source = match kind.as_str() {
        "env" => SecretSource::Env(value),
        "literal" => SecretSource::Literal(SecretValue::new(value)),
        other => return Ok(Err(Error::Corrupt(format!("unknown secret kind {other}")))),
    };
    Ok(Ok(Secret {
        name: r.get(0)?,
        source,
        created_at: r.get(3)?,
    }))
}

fn read_connection(r: &Row<'_>) -> rusqlite::Result<Result<Connection>> {
    let options: String = r.get(2)?;
    let build = || -> Result<Connection> {
        Ok(Connection {
            name: r.get(0)?,
            kind: r.get(1)?,
            options: serde_json::from_str::<BTreeMap<String, String>>(&options)?,
            password_secret: r.get(3)?,
            created_at: r.get(4)?,
        })
    };
    Ok(build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewObject, ObjectKind, ObjectName};

    #[test]
    fn secrets_connections_and_their_dependents() {
        let catalog = Catalog::open_in_memory().unwrap();
        let literal = SecretSource::Literal(SecretValue::new("hunter2"));
        assert!(catalog.create_secret("pw", &literal, false, false).unwrap());
        assert!(matches!(
            catalog.create_secret("pw", &literal, false, false),
            Err(Error::Duplicate { .. })
        ));
        assert!(!catalog.create_secret("pw", &literal, false, true).unwrap());
        let stored = catalog.secret("pw").unwrap().unwrap();
        assert_eq!(stored.source, literal);
        assert!(!format!("{stored:?}").contains("hunter2"));

        let connection = Connection {
            name: "db".into(),
            kind: "postgres".into(),
            options: BTreeMap::from([("host".to_string(), "127.0.0.1".to_string())]),
            password_secret: Some("pw".into()),
            created_at: String::new(),
        };
        catalog
            .create_connection(&connection, false, false)
            .unwrap();
        let missing = Connection {
            password_secret: Some("nope".into()),
            name: "other".into(),
            ..connection.clone()
        };
        assert!(matches!(
            catalog.create_connection(&missing, false, false),
            Err(Error::NotFound {
                kind: ObjectClass::Secret,
                ..
            })
        ));
        assert!(matches!(
            catalog.drop_secret("pw"),
            Err(Error::HasDependents { .. })
        ));

        let mut options = BTreeMap::new();
        options.insert("connection".to_string(), "db".to_string());
        catalog
            .create_object(
                &NewObject {
                    name: ObjectName::new("public", "s"),
                    kind: ObjectKind::Source,
                    sql: String::new(),
                    query: None,
                    default_schema: None,
                    options,
                    columns: Vec::new(),
                    location: None,
                    comment: None,
                },
                &[],
            )
            .unwrap();
        let Err(Error::HasDependents { dependents, .. }) = catalog.drop_connection("db") else {
            panic!("a used connection was dropped")
        };
        assert_eq!(dependents, vec!["public.s"]);
        let id = catalog.connection_dependents("db").unwrap();
        catalog.drop_objects(&id).unwrap();
        catalog.drop_connection("db").unwrap();
        catalog.drop_secret("pw").unwrap();
        assert!(catalog.secrets().unwrap().is_empty());
    }
}
