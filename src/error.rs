//! The one public error type of ovafs.
//!
//! Every layer reports failures as an [`Error`]: a kind that names the broken rule with
//! structured fields (so tests can assert the exact kind), optionally wrapped in context
//! lines that say what was being done (which member, which disk, which operation).
//! `Display` renders the whole chain on one line, which is what users see.
//!
//! This is the bottom layer: it names no layer above it. A layer with rules of its own (tar,
//! OVF, package, disk) keeps its own error enum and converts it into [`Error`] in its own
//! `From` impl, boxed as [`ErrorKind::Layer`]; [`Error::layer_error`] finds it again by type.
//!
//! Nothing here knows an errno: the FUSE layer maps kinds to errnos in one table.

use std::fmt;
use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, without the surrounding context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An operating-system I/O call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being attempted ("read", "open /path", ...).
        op: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A read wanted bytes that the source does not have (truncated file or member).
    #[error(
        "unexpected end of data: wanted {wanted} bytes at offset {offset}, only {available} exist"
    )]
    UnexpectedEof {
        /// Offset of the read.
        offset: u64,
        /// Bytes wanted.
        wanted: u64,
        /// Length of the source.
        available: u64,
    },
    /// A size or offset computation overflowed: the input claims impossible numbers.
    #[error("arithmetic overflow computing {what}")]
    Overflow {
        /// Which quantity overflowed.
        what: &'static str,
    },
    /// A size read from the input exceeds a limit that keeps memory bounded.
    #[error("{what} is {value} bytes, above the limit of {limit}")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// The size claimed.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// Opening the package would cross a per-opening budget (metadata memory, bytes
    /// inflated while indexing); the message says which option raises it.
    #[error(
        "{what} needs {} more of {budget} ({} in all), above the limit of {}; \
         raise it with -o {option}=SIZE",
        crate::units::human_size(*.need),
        crate::units::human_size(.used.saturating_add(*.need)),
        crate::units::human_size(*.limit)
    )]
    BudgetExceeded {
        /// Which budget ("metadata memory").
        budget: &'static str,
        /// The mount option that raises it.
        option: &'static str,
        /// What asked for more ("VMDK grain directory").
        what: String,
        /// Bytes asked for.
        need: u64,
        /// Bytes already counted.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// A layer's own error: a malformed tar archive, OVF descriptor, package or disk image.
    /// It is kept whole behind a box, so that this type names none of the layers above it:
    /// each layer converts its error enum with [`Error::layer`] (in its own `From` impl),
    /// and [`Error::layer_error`] gives it back by type. `Display` and `source` are the
    /// boxed error's own.
    #[error(transparent)]
    Layer(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A new value for a setting (or a new descriptor) is not acceptable; the message says
    /// why in the user's terms.
    #[error("{0}")]
    InvalidEdit(String),
    /// The package failed an integrity check (manifest digests, certificate signature).
    #[error("{0}")]
    Verification(String),
    /// A write was attempted on something read-only.
    #[error("{0}")]
    ReadOnly(String),
    /// A command-line or mount option is invalid.
    #[error("{0}")]
    Usage(String),
    /// An operation on a file or folder of the mount (or beside the package) that is
    /// refused for a reason of the file system kind: the FUSE layer maps each [`Refusal`] to
    /// its errno, so that no layer below it invents one.
    #[error("{what}: {reason}")]
    Refused {
        /// What was refused (usually a path).
        what: String,
        /// Why.
        reason: Refusal,
    },
}

impl ErrorKind {
    /// The layer error of type `T` this kind holds (see [`ErrorKind::Layer`]), if any.
    pub fn layer_error<T: std::error::Error + 'static>(&self) -> Option<&T> {
        match self {
            ErrorKind::Layer(e) => e.downcast_ref::<T>(),
            _ => None,
        }
    }
}

/// Why an operation on a file or folder is refused: the reasons a file system gives, named
/// without errnos (the FUSE layer's one table turns them into errnos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No such file or folder.
    #[error("no such file or folder")]
    NotFound,
    /// The name is taken.
    #[error("already exists")]
    Exists,
    /// A folder was needed.
    #[error("not a folder")]
    NotAFolder,
    /// A file was needed.
    #[error("is a folder")]
    IsAFolder,
    /// The folder still holds entries.
    #[error("folder not empty")]
    NotEmpty,
    /// This kind of file never allows the operation (deleting a member, say).
    #[error("operation not permitted")]
    NotPermitted,
    /// The file does not allow it as it is now (opening a read-only file for writing).
    #[error("permission denied")]
    AccessDenied,
    /// The result would be larger than the file may grow.
    #[error("file too large")]
    TooLarge,
    /// The operation is not supported by this kind of file.
    #[error("operation not supported")]
    NotSupported,
    /// An argument is not acceptable (a bad name, a bad flag combination).
    #[error("invalid argument")]
    InvalidArgument,
    /// Someone else holds what is needed; trying again later may work.
    #[error("busy, try again")]
    Busy,
    /// The operation would move a file between two folders that cannot exchange files.
    #[error("cannot move between these folders")]
    CrossFolder,
    /// A bound on the number of files is reached.
    #[error("no space for more files")]
    NoSpace,
    /// No data past this offset (a seek for data or a hole beyond the end).
    #[error("no data past this offset")]
    NoData,
}

/// An error with optional context lines, outermost first.
pub struct Error {
    kind: Box<ErrorKind>,
    context: Vec<String>,
}

impl Error {
    /// Creates an error of the given kind without context.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            kind: Box::new(kind),
            context: Vec::new(),
        }
    }

    /// Wraps a layer's own error enum (see [`ErrorKind::Layer`]); each layer's
    /// `From<ItsError> for Error` calls this.
    pub fn layer(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::new(ErrorKind::Layer(Box::new(e)))
    }

    /// The layer error of type `T` inside, ignoring context: `e.layer_error::<DiskError>()`.
    pub fn layer_error<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.kind.layer_error()
    }

    /// The layer error of type `T` inside, by value (its context lines are dropped), or the
    /// error unchanged when it holds none.
    pub fn into_layer_error<T: std::error::Error + 'static>(self) -> Result<T, Self> {
        match *self.kind {
            ErrorKind::Layer(e) => e.downcast::<T>().map(|t| *t).map_err(|e| Error {
                kind: Box::new(ErrorKind::Layer(e)),
                context: self.context,
            }),
            kind => Err(Error {
                kind: Box::new(kind),
                context: self.context,
            }),
        }
    }

    /// Wraps an `io::Error` with the operation that failed.
    pub fn io(op: impl Into<String>, source: io::Error) -> Self {
        Error::new(ErrorKind::Io {
            op: op.into(),
            source,
        })
    }

    /// An operation refused for `reason` (see [`Refusal`]).
    pub fn refused(what: impl Into<String>, reason: Refusal) -> Self {
        Error::new(ErrorKind::Refused {
            what: what.into(),
            reason,
        })
    }

    /// The reason, when this is a [`ErrorKind::Refused`].
    pub fn refusal(&self) -> Option<Refusal> {
        match &*self.kind {
            ErrorKind::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// A usage error (bad option, bad argument).
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Usage(msg.into()))
    }

    /// An overflow while computing `what`.
    pub fn overflow(what: &'static str) -> Self {
        Error::new(ErrorKind::Overflow { what })
    }

    /// The kind, ignoring context.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Adds an outer context line ("reading disk1.vmdk", "grain 17").
    pub fn context(mut self, what: impl Into<String>) -> Self {
        self.context.insert(0, what.into());
        self
    }

    /// The raw OS error number, if this error came from the OS.
    pub fn os_error(&self) -> Option<i32> {
        match &*self.kind {
            ErrorKind::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.context {
            write!(f, "{c}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({self}; kind = {:?})", self.kind)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source()
    }
}

/// Adds context to results, like `anyhow::Context` but for our [`Error`].
pub trait ResultExt<T> {
    /// Adds a context line computed lazily.
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_context_outermost_first() {
        let e = Error::new(ErrorKind::UnexpectedEof {
            offset: 10,
            wanted: 4,
            available: 12,
        })
        .context("grain 3")
        .context("disk1.vmdk");
        let s = e.to_string();
        assert_eq!(
            s,
            "disk1.vmdk: grain 3: unexpected end of data: wanted 4 bytes at offset 10, only 12 exist"
        );
        assert!(!s.contains('\n'));
    }

    /// A stand-in for a layer's error enum, with a source of its own.
    #[derive(Debug, thiserror::Error)]
    enum LayerStandIn {
        #[error("bad header at {at}")]
        BadHeader { at: u64, source: io::Error },
    }

    fn layer_stand_in() -> Error {
        Error::layer(LayerStandIn::BadHeader {
            at: 7,
            source: io::Error::other("short read"),
        })
        .context("disk1.vmdk")
    }

    #[test]
    fn a_layer_error_is_shown_as_its_own() {
        let e = layer_stand_in();
        assert_eq!(e.to_string(), "disk1.vmdk: bad header at 7");
        let debug = format!("{e:?}");
        assert!(debug.contains("BadHeader"), "{debug}");
        assert!(debug.contains("short read"), "{debug}");
        // The boxed error is transparent: the chain goes on with its own source.
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("short read"));
    }

    #[test]
    fn a_layer_error_is_found_by_its_type() {
        let e = layer_stand_in();
        assert!(matches!(
            e.layer_error(),
            Some(LayerStandIn::BadHeader { at: 7, .. })
        ));
        assert!(e.layer_error::<io::Error>().is_none());
        assert!(Error::usage("x").layer_error::<LayerStandIn>().is_none());
        // By value: the wrong type gives the error back whole, context included.
        let e = e.into_layer_error::<io::Error>().unwrap_err();
        assert_eq!(e.to_string(), "disk1.vmdk: bad header at 7");
        assert!(matches!(
            e.into_layer_error(),
            Ok(LayerStandIn::BadHeader { at: 7, .. })
        ));
        let e = Error::usage("x")
            .into_layer_error::<LayerStandIn>()
            .unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Usage(_)));
    }
}
