//! Projects: folders of `.sql` files applied in path order, idempotently. An unchanged
//! definition is left alone, a changed model or view is replaced (CREATE OR REPLACE rules),
//! and writes into a table run only when this apply created the table, so applying the same
//! project twice changes nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use datafusion::sql::sqlparser::ast;

use crate::dialect::Statement;
use crate::error::{Error, Result};
use crate::names;
use crate::session::Session;

/// What an apply did, object by object.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    pub unchanged: Vec<String>,
    pub kept: Vec<String>,
    pub statements: usize,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} statements: {} created, {} replaced, {} unchanged",
            self.statements,
            self.created.len(),
            self.replaced.len(),
            self.unchanged.len()
        )?;
        if !self.kept.is_empty() {
            write!(
                f,
                ", {} changed but kept (drop them to redefine: {})",
                self.kept.len(),
                self.kept.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The `.sql` files of a project (a file or a folder, recursively), in path order.
pub fn project_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Error::bad_input(format!(
                "cannot read project folder \"{}\": {e}",
                dir.display()
            ))
        })?;
        for entry in entries {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "sql") {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Applies a project through a session.
pub async fn apply(session: &mut Session, path: &Path) -> Result<ApplyReport> {
    let mut report = ApplyReport::default();
    let mut created_here: BTreeSet<String> = BTreeSet::new();
    for file in project_files(path)? {
        let text = std::fs::read_to_string(&file)?;
        let prepared = session.parse(&text).map_err(|e| in_file(&file, e))?;
        for mut p in prepared {
            report.statements += 1;
            let Some(statement) = p.statement.clone() else {
                continue;
            };
            let schema = session.current_schema();
            let defined = match &statement {
                Statement::CreateModel(m) => Some((names::object_name(&m.name, &schema)?, true)),
                Statement::CreateSource(s) => Some((names::object_name(&s.name, &schema)?, false)),
                Statement::Sql(stmt) => match stmt.as_ref() {
                    ast::Statement::CreateTable(t) => {
                        Some((names::object_name(&t.name, &schema)?, false))
                    }
                    ast::Statement::CreateView(v) => {
                        Some((names::object_name(&v.name, &schema)?, true))
                    }
                    ast::Statement::CreateSchema {
                        schema_name: ast::SchemaName::Simple(n),
                        ..
                    } => {
                        let name = names::object_name(n, "")?.name;
                        if session.engine.catalog().schema_exists(&name)? {
                            report.unchanged.push(format!("schema {name}"));
                            continue;
                        }
                        None
                    }
                    ast::Statement::Insert(ast::Insert {
                        table: ast::TableObject::TableName(n),
                        ..
                    })
                    | ast::Statement::Copy {
                        source: ast::CopySource::Table { table_name: n, .. },
                        to: false,
                        ..
                    } => {
                        let name = names::object_name(n, &schema)?;
                        if !created_here.contains(&name.to_string()) {
                            continue;
                        }
                        None
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some((name, replaceable)) = &defined
                && let Some(existing) = session.engine.catalog().object(name)?
            {
                if existing.sql.trim() == p.text.trim() {
                    report.unchanged.push(name.to_string());
                    continue;
                }
                if !*replaceable {
                    report.kept.push(name.to_string());
                    continue;
                }
                p.statement = Some(or_replace(statement));
                session
                    .execute(&p, None)
                    .await
                    .map_err(|e| in_file(&file, e))?;
                report.replaced.push(name.to_string());
                continue;
            }
            session
                .execute(&p, None)
                .await
                .map_err(|e| in_file(&file, e))?;
            if let Some((name, _)) = defined {
                created_here.insert(name.to_string());
                report.created.push(name.to_string());
            }
        }
    }
    Ok(report)
}

fn or_replace(statement: Statement) -> Statement {
    match statement {
        Statement::CreateModel(mut m) => {
            m.or_replace = true;
            Statement::CreateModel(m)
        }
        Statement::Sql(stmt) => match *stmt {
            ast::Statement::CreateView(mut v) => {
                v.or_replace = true;
                Statement::Sql(Box::new(ast::Statement::CreateView(v)))
            }
            other => Statement::Sql(Box::new(other)),
        },
        other => other,
    }
}

fn in_file(file: &Path, e: Error) -> Error {
    Error::BadInput {
        message: format!("{}: {e}", file.display()),
        detail: None,
    }
}
