//! The server's configuration: defaults < `tributary.toml` < `TRIBUTARY_*` environment <
//! flags (the `serve` flags are [`ServeArgs`]; the command line itself is `cli.rs`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use tributary_engine::HousekeepingPolicy;

use crate::scheduler::SchedulerConfig;

#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// PostgreSQL wire protocol address [default: 127.0.0.1:6543]
    #[arg(long, env = "TRIBUTARY_LISTEN")]
    pub listen: Option<String>,
    /// HTTP address for /health [default: 127.0.0.1:6544]
    #[arg(long, env = "TRIBUTARY_HTTP")]
    pub http: Option<String>,
    /// Warehouse: a local folder or a URL where Delta tables live [default: ./warehouse]
    #[arg(long, env = "TRIBUTARY_WAREHOUSE")]
    pub warehouse: Option<String>,
    /// Catalog: a SQLite file path or sqlite:// URL [default: catalog.db inside the warehouse]
    #[arg(long, env = "TRIBUTARY_CATALOG")]
    pub catalog: Option<String>,
    /// A project (folder of .sql files) to apply at start.
    #[arg(long, env = "TRIBUTARY_PROJECT")]
    pub project: Option<PathBuf>,
    /// Name of the bootstrap superuser [default: tributary]
    #[arg(long, env = "TRIBUTARY_SUPERUSER")]
    pub superuser: Option<String>,
    /// Password of the bootstrap superuser; without one, the server only listens on loopback
    /// and trusts local clients.
    #[arg(long, env = "TRIBUTARY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Database name clients connect to [default: tributary]
    #[arg(long, env = "TRIBUTARY_DATABASE")]
    pub database: Option<String>,
    /// Most concurrent connections [default: 100]
    #[arg(long, env = "TRIBUTARY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Query memory before spilling, in MiB [default: half the machine's memory, at least 4096]
    #[arg(long, env = "TRIBUTARY_MEMORY_MB")]
    pub memory_mb: Option<usize>,
    /// Time between housekeeping passes (compaction, checkpoints, vacuum), e.g. '10 minutes';
    /// 'off' disables housekeeping [default: 10 minutes]
    #[arg(long, env = "TRIBUTARY_HOUSEKEEPING_INTERVAL")]
    pub housekeeping_interval: Option<String>,
    /// Removed data files older than this are deleted; time travel reaches back this far
    /// [default: 7 days]
    #[arg(long, env = "TRIBUTARY_HOUSEKEEPING_VACUUM_RETENTION")]
    pub vacuum_retention: Option<String>,
    /// Compact a table once it has this many small files [default: 16]
    #[arg(long, env = "TRIBUTARY_HOUSEKEEPING_COMPACT_MIN_FILES")]
    pub compact_min_files: Option<usize>,
    /// Size of the files compaction writes, in MiB; smaller files count as small [default: 128]
    #[arg(long, env = "TRIBUTARY_HOUSEKEEPING_TARGET_FILE_MB")]
    pub target_file_mb: Option<u64>,
    /// Write a Delta checkpoint when this many commits passed without one [default: 100]
    #[arg(long, env = "TRIBUTARY_HOUSEKEEPING_CHECKPOINT_EVERY")]
    pub checkpoint_every: Option<u64>,
    /// Refresh models by their `schedule` ('on change', 'every ...', 'cron ...'), with their
    /// retries and timeouts: 'on' or 'off' [default: on]
    #[arg(long, env = "TRIBUTARY_SCHEDULER")]
    pub scheduler: Option<String>,
    /// Most refreshes the scheduler runs at once [default: 2]
    #[arg(long, env = "TRIBUTARY_MAX_CONCURRENT_REFRESHES")]
    pub max_concurrent_refreshes: Option<usize>,
}

/// `tributary.toml`: the same settings as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub listen: Option<String>,
    pub http: Option<String>,
    pub warehouse: Option<String>,
    pub catalog: Option<String>,
    pub project: Option<PathBuf>,
    pub superuser: Option<String>,
    pub password: Option<String>,
    pub database: Option<String>,
    pub max_connections: Option<usize>,
    pub memory_mb: Option<usize>,
    pub housekeeping: Option<HousekeepingFile>,
    /// `"on"` or `"off"`.
    pub scheduler: Option<String>,
    pub max_concurrent_refreshes: Option<usize>,
}

/// `[housekeeping]` in `tributary.toml`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HousekeepingFile {
    pub interval: Option<String>,
    pub vacuum_retention: Option<String>,
    pub compact_min_files: Option<usize>,
    pub target_file_mb: Option<u64>,
    pub checkpoint_every: Option<u64>,
}

/// Settings after merging every layer.
#[derive(Debug)]
pub(crate) struct Settings {
    pub listen: String,
    pub http: String,
    pub warehouse: String,
    pub catalog: Option<PathBuf>,
    pub project: Option<PathBuf>,
    pub superuser: String,
    pub password: Option<String>,
    pub database: String,
    pub max_connections: usize,
    pub memory_mb: usize,
    /// `None` when housekeeping is off.
    pub housekeeping: Option<HousekeepingPolicy>,
    /// `None` when the scheduler is off.
    pub scheduler: Option<SchedulerConfig>,
}

impl Settings {
    pub(crate) fn resolve(config: Option<&PathBuf>, args: ServeArgs) -> Result<Self, String> {
        let file = match config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from("tributary.toml")).filter(|p| p.exists()),
        };
        let file: FileConfig = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("invalid {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let housekeeping = housekeeping_policy(&args, file.housekeeping.unwrap_or_default())?;
        let scheduler = match args
            .scheduler
            .as_deref()
            .or(file.scheduler.as_deref())
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("on" | "true") => Some(SchedulerConfig {
                max_concurrent: args
                    .max_concurrent_refreshes
                    .or(file.max_concurrent_refreshes)
                    .unwrap_or(2)
                    .max(1),
            }),
            Some("off" | "false") => None,
            Some(other) => return Err(format!("invalid scheduler \"{other}\": write on or off")),
        };
        let catalog = args
            .catalog
            .or(file.catalog)
            .map(|c| PathBuf::from(c.strip_prefix("sqlite://").unwrap_or(&c)));
        Ok(Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:6543".into()),
            http: args
                .http
                .or(file.http)
                .unwrap_or_else(|| "127.0.0.1:6544".into()),
            warehouse: args
                .warehouse
                .or(file.warehouse)
                .unwrap_or_else(|| "./warehouse".into()),
            catalog,
            project: args.project.or(file.project),
            superuser: args
                .superuser
                .or(file.superuser)
                .unwrap_or_else(|| "tributary".into()),
            password: args.password.or(file.password),
            database: args
                .database
                .or(file.database)
                .unwrap_or_else(|| "tributary".into()),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(100),
            memory_mb: args
                .memory_mb
                .or(file.memory_mb)
                .unwrap_or_else(default_memory_mb),
            housekeeping,
            scheduler,
        })
    }
}

/// Half the machine's memory (MemTotal of `/proc/meminfo`), at least 4 GiB: the spilling pool
/// divides its memory among the operators that may spill, so a 4 GiB pool made a 10M-row
/// `SELECT DISTINCT` and a model's sort spill to disk on a 24 GiB machine.
fn default_memory_mb() -> usize {
    const FLOOR_MB: usize = 4096;
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| mem_total_kib(&info));
    total_kib.map_or(FLOOR_MB, |kib| (kib / 1024 / 2).max(FLOOR_MB))
}

/// The `MemTotal` line of `/proc/meminfo`, in KiB.
fn mem_total_kib(meminfo: &str) -> Option<usize> {
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn housekeeping_policy(
    args: &ServeArgs,
    file: HousekeepingFile,
) -> Result<Option<HousekeepingPolicy>, String> {
    let defaults = HousekeepingPolicy::default();
    let interval = args.housekeeping_interval.clone().or(file.interval);
    let interval = match interval.as_deref().map(str::trim) {
        Some("off" | "false" | "never" | "0") => return Ok(None),
        Some(text) => parse_duration("housekeeping interval", text)?,
        None => defaults.interval,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    let vacuum_retention = match args.vacuum_retention.clone().or(file.vacuum_retention) {
        Some(text) => parse_duration("vacuum retention", &text)?,
        None => defaults.vacuum_retention,
    };
    Ok(Some(HousekeepingPolicy {
        interval,
        vacuum_retention,
        compact_min_files: args
            .compact_min_files
            .or(file.compact_min_files)
            .unwrap_or(defaults.compact_min_files),
        target_file_size: args
            .target_file_mb
            .or(file.target_file_mb)
            .map_or(defaults.target_file_size, |mb| mb.max(1) << 20),
        checkpoint_every: args
            .checkpoint_every
            .or(file.checkpoint_every)
            .unwrap_or(defaults.checkpoint_every),
    }))
}

/// `'7 days'`, `'10 minutes'`, `'90s'`, `'1h 30m'`; a bare `0` is zero.
fn parse_duration(what: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid {what} \"{text}\": {e} (write e.g. '7 days', '10 minutes' or '90s')")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tributary.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nwarehouse = \"/data/wh\"\nmax_connections = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            listen: Some("127.0.0.1:7001".into()),
            ..Default::default()
        };
        let settings = Settings::resolve(Some(&file), args).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:7001");
        assert_eq!(settings.warehouse, "/data/wh");
        assert_eq!(settings.max_connections, 7);
        assert_eq!(settings.http, "127.0.0.1:6544");
        assert_eq!(settings.database, "tributary");
    }

    #[test]
    fn memory_defaults_to_half_the_machine_with_a_floor() {
        let info = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";
        assert_eq!(mem_total_kib(info), Some(24_576_000));
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
        assert!(default_memory_mb() >= 4096);
        let settings = Settings::resolve(None, ServeArgs::default()).unwrap();
        assert_eq!(settings.memory_mb, default_memory_mb());
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tributary.toml");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let e = Settings::resolve(Some(&file), ServeArgs::default()).unwrap_err();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn housekeeping_comes_from_the_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tributary.toml");
        std::fs::write(
            &file,
            "[housekeeping]\ninterval = \"1 hour\"\nvacuum_retention = \"30 days\"\n\
             compact_min_files = 8\n",
        )
        .unwrap();
        let args = ServeArgs {
            vacuum_retention: Some("2 days".into()),
            ..Default::default()
        };
        let policy = Settings::resolve(Some(&file), args)
            .unwrap()
            .housekeeping
            .unwrap();
        assert_eq!(policy.interval, Duration::from_secs(3600));
        assert_eq!(policy.vacuum_retention, Duration::from_secs(2 * 86400));
        assert_eq!(policy.compact_min_files, 8);
        assert_eq!(policy.checkpoint_every, 100);

        let defaults = Settings::resolve(None, ServeArgs::default()).unwrap();
        assert_eq!(defaults.housekeeping, Some(HousekeepingPolicy::default()));
        let off = ServeArgs {
            housekeeping_interval: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(Settings::resolve(None, off).unwrap().housekeeping, None);
        let bad = ServeArgs {
            vacuum_retention: Some("a week".into()),
            ..Default::default()
        };
        let e = Settings::resolve(None, bad).unwrap_err();
        assert!(e.contains("vacuum retention"), "{e}");
    }

    #[test]
    fn the_scheduler_is_on_unless_turned_off() {
        let defaults = Settings::resolve(None, ServeArgs::default()).unwrap();
        assert_eq!(
            defaults.scheduler,
            Some(SchedulerConfig { max_concurrent: 2 })
        );
        let four = ServeArgs {
            max_concurrent_refreshes: Some(4),
            ..Default::default()
        };
        let settings = Settings::resolve(None, four).unwrap();
        assert_eq!(settings.scheduler.unwrap().max_concurrent, 4);
        let off = ServeArgs {
            scheduler: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(Settings::resolve(None, off).unwrap().scheduler, None);
        let bad = ServeArgs {
            scheduler: Some("sometimes".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(None, bad).is_err());
    }

    #[test]
    fn sqlite_urls_name_a_file() {
        let args = ServeArgs {
            catalog: Some("sqlite:///tmp/c.db".into()),
            ..Default::default()
        };
        let settings = Settings::resolve(None, args).unwrap();
        assert_eq!(settings.catalog, Some(PathBuf::from("/tmp/c.db")));
    }
}
