//! Logging set-up: `RUST_LOG`-driven, to stderr in the foreground and to syslog for a
//! background daemon (which has no terminal). Warnings and errors are shown by default.

use std::sync::Once;

static INIT: Once = Once::new();

/// Logs to stderr. `debug` raises the default level to debug; `RUST_LOG` overrides both.
pub fn init_stderr(debug: bool) {
    INIT.call_once(|| {
        let default = if debug { "debug" } else { "warn" };
        let _ =
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
                .format_timestamp_millis()
                .try_init();
    });
}

/// Logs to the local syslog (journald), falling back to nothing if there is none.
/// The level comes from `RUST_LOG` when it is a plain level name, else `warn`.
pub fn init_syslog() {
    INIT.call_once(|| {
        let level = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse::<log::LevelFilter>().ok())
            .unwrap_or(log::LevelFilter::Warn);
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "ovafs".into(),
            pid: std::process::id(),
        };
        if let Ok(logger) = syslog::unix(formatter)
            && log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok()
        {
            log::set_max_level(level);
        }
    });
}
