//! Projects: folders of `.sql` files applied in path order, idempotently. An unchanged
//! definition is left alone, a changed model or view is replaced (CREATE OR REPLACE rules),
//! and writes into a table run only when this apply created the table, so applying the same
//! project twice changes nothing. The same logic serves `serve --project` (a local session)
//! and `tributary apply` (a remote server over pgwire) through [`ApplyTarget`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use datafusion::sql::sqlparser::ast;
use tributary_catalog::ObjectName;

use crate::dialect::{self, Statement};
use crate::error::{Error, Result};
use crate::names;
use crate::session::Session;

/// Where a project is applied.
#[async_trait]
pub trait ApplyTarget: Send {
    /// The stored definition (statement text) of an object, if it exists.
    async fn definition(&mut self, name: &ObjectName) -> Result<Option<String>>;
    async fn schema_exists(&mut self, name: &str) -> Result<bool>;
    /// The stored definition (statement text) of a data test, if it exists.
    async fn test_definition(&mut self, name: &str) -> Result<Option<String>>;
    /// The stored definition (statement text) of a job, if it exists.
    async fn job_definition(&mut self, name: &str) -> Result<Option<String>>;
    /// Runs one statement.
    async fn execute(&mut self, sql: &str) -> Result<()>;
}

#[async_trait]
impl ApplyTarget for Session {
    async fn definition(&mut self, name: &ObjectName) -> Result<Option<String>> {
        Ok(self.engine.catalog().object(name)?.map(|o| o.sql))
    }

    async fn schema_exists(&mut self, name: &str) -> Result<bool> {
        Ok(self.engine.catalog().schema_exists(name)?)
    }

    async fn test_definition(&mut self, name: &str) -> Result<Option<String>> {
        Ok(self.engine.catalog().test(name)?.map(|t| t.sql))
    }

    async fn job_definition(&mut self, name: &str) -> Result<Option<String>> {
        Ok(self.engine.catalog().job(name)?.map(|j| j.sql))
    }

    async fn execute(&mut self, sql: &str) -> Result<()> {
        let prepared = self.prepare(sql)?;
        Session::execute(self, &prepared, None).await.map(|_| ())
    }
}

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

/// What a statement defines, for change detection.
enum Defines {
    /// An object: replaceable ones (models, views) are replaced when changed.
    Object {
        name: ObjectName,
        replaceable: bool,
    },
    Schema(String),
    /// A data test or a job (`kind`): replaced (dropped and created) when changed.
    Global {
        kind: &'static str,
        name: String,
    },
    /// A write into a table: runs only if this apply created the table.
    WriteInto(ObjectName),
    Other,
}

fn classify(statement: &Statement) -> Result<Defines> {
    let schema = "public";
    Ok(match statement {
        Statement::CreateModel(m) => Defines::Object {
            name: names::object_name(&m.name, schema)?,
            replaceable: true,
        },
        Statement::CreateSource(s) => Defines::Object {
            name: names::object_name(&s.name, schema)?,
            replaceable: false,
        },
        Statement::CreateTest(t) => Defines::Global {
            kind: "test",
            name: names::ident(&t.name),
        },
        Statement::CreateJob(j) => Defines::Global {
            kind: "job",
            name: names::ident(&j.name),
        },
        Statement::Sql(stmt) => match stmt.as_ref() {
            ast::Statement::CreateTable(t) => Defines::Object {
                name: names::object_name(&t.name, schema)?,
                replaceable: false,
            },
            ast::Statement::CreateView(v) => Defines::Object {
                name: names::object_name(&v.name, schema)?,
                replaceable: true,
            },
            ast::Statement::CreateSchema {
                schema_name: ast::SchemaName::Simple(n),
                ..
            } => Defines::Schema(names::object_name(n, "")?.name),
            ast::Statement::Insert(ast::Insert {
                table: ast::TableObject::TableName(n),
                ..
            })
            | ast::Statement::Copy {
                source: ast::CopySource::Table { table_name: n, .. },
                to: false,
                ..
            } => Defines::WriteInto(names::object_name(n, schema)?),
            _ => Defines::Other,
        },
        _ => Defines::Other,
    })
}

/// `CREATE MODEL ...` as `CREATE OR REPLACE MODEL ...` (also views and materialized views).
fn or_replace(text: &str) -> String {
    let trimmed = text.trim_start();
    let lead = &text[..text.len() - trimmed.len()];
    match trimmed.get(..6) {
        Some(create) if create.eq_ignore_ascii_case("create") => {
            let rest = &trimmed[6..];
            if rest
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("or replace")
            {
                text.to_string()
            } else {
                format!("{lead}CREATE OR REPLACE{rest}")
            }
        }
        _ => text.to_string(),
    }
}

/// Applies a project to a target; stops at the first error, naming the file.
pub async fn apply(target: &mut dyn ApplyTarget, path: &Path) -> Result<ApplyReport> {
    apply_files(target, &project_files(path)?).await
}

/// Applies a project's files, in the order given.
pub async fn apply_files(target: &mut dyn ApplyTarget, files: &[PathBuf]) -> Result<ApplyReport> {
    let mut report = ApplyReport::default();
    let mut created_here: BTreeSet<ObjectName> = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file)?;
        let in_file = |e: Error| Error::BadInput {
            message: format!("{}: {e}", file.display()),
            detail: None,
        };
        for statement_text in dialect::split_statements(&text).map_err(|e| in_file(e.into()))? {
            report.statements += 1;
            let statement =
                dialect::parse_statement(&statement_text).map_err(|e| in_file(e.into()))?;
            match classify(&statement).map_err(in_file)? {
                Defines::Schema(name) => {
                    if target.schema_exists(&name).await.map_err(in_file)? {
                        report.unchanged.push(format!("schema {name}"));
                        continue;
                    }
                }
                Defines::WriteInto(name) => {
                    if !created_here.contains(&name) {
                        continue;
                    }
                }
                Defines::Object { name, replaceable } => {
                    match target.definition(&name).await.map_err(in_file)? {
                        Some(existing)
                            if or_replace(existing.trim()) == or_replace(statement_text.trim()) =>
                        {
                            report.unchanged.push(name.to_string());
                        }
                        Some(_) if !replaceable => report.kept.push(name.to_string()),
                        Some(_) => {
                            target
                                .execute(&or_replace(&statement_text))
                                .await
                                .map_err(in_file)?;
                            report.replaced.push(name.to_string());
                        }
                        None => {
                            target.execute(&statement_text).await.map_err(in_file)?;
                            report.created.push(name.to_string());
                            created_here.insert(name);
                        }
                    }
                    continue;
                }
                Defines::Global { kind, name } => {
                    let label = format!("{kind} {name}");
                    let existing = match kind {
                        "job" => target.job_definition(&name).await,
                        _ => target.test_definition(&name).await,
                    }
                    .map_err(in_file)?;
                    match existing {
                        Some(existing) if existing.trim() == statement_text.trim() => {
                            report.unchanged.push(label);
                        }
                        Some(_) => {
                            let drop = format!(
                                "DROP {} {}",
                                kind.to_uppercase(),
                                crate::quality::definition::quote(&name)
                            );
                            target.execute(&drop).await.map_err(in_file)?;
                            target.execute(&statement_text).await.map_err(in_file)?;
                            report.replaced.push(label);
                        }
                        None => {
                            target.execute(&statement_text).await.map_err(in_file)?;
                            report.created.push(label);
                        }
                    }
                    continue;
                }
                Defines::Other => {}
            }
            target.execute(&statement_text).await.map_err(in_file)?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::or_replace;

    #[test]
    fn or_replace_keeps_the_rest_of_the_statement() {
        assert_eq!(
            or_replace("create model m as select 1"),
            "CREATE OR REPLACE model m as select 1"
        );
        assert_eq!(
            or_replace("\nCREATE OR REPLACE VIEW v AS SELECT 1"),
            "\nCREATE OR REPLACE VIEW v AS SELECT 1"
        );
    }
}
