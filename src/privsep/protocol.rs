//! The wire between the worker and the privileged helper: the only place it is defined.
//!
//! * One message per `SOCK_SEQPACKET` datagram, at most [`MAX_DATAGRAM`] bytes.
//! * Messages are the closed enums [`Request`] (worker → helper) and [`Reply`] (helper → worker),
//!   encoded with postcard (a compact, specified serde format: varint integers, length-prefixed
//!   sequences, enum variants by index).
//! * Decoding is total: any byte string gives a message or a [`ProtoError`], never a panic. Serde
//!   caps what a length prefix may preallocate (1 MiB), and anything larger must be backed by real
//!   bytes in a datagram of at most 64 KiB.
//! * File descriptors travel only with `SCM_RIGHTS` on the messages that declare them
//!   ([`Request::Exec`], one fd per entry of `lists`; [`Request::Dump`], one per entry of
//!   `files`), are received with `MSG_CMSG_CLOEXEC`, and a datagram whose fds do not match its
//!   declaration is an error.
//! * The first exchange is `Hello { version }` both ways; any other version ends the session.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Protocol version; both sides must agree exactly.
pub const VERSION: u32 = 2;
/// Hard cap on one datagram. Socket buffers are raised to hold a few of these.
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// Most paths in one batched request (Walk, Stat): their replies must fit a datagram too.
pub const MAX_BATCH: usize = 1024;
/// Most `threads/…` files one dump may have (the helper runs at most this many handlers).
pub const MAX_DUMP_THREADS: usize = 64;
/// Most files one dump has: `instance`, `queue/0` … `queue/3`, and the running jobs.
pub const MAX_DUMP_FILES: usize = 5 + MAX_DUMP_THREADS;
/// Most fds one message may carry: a dump's files (an Exec carries at most two lists). More
/// truncate the control data, which ends the session.
pub const MAX_FDS: usize = MAX_DUMP_FILES;

/// A path relative to the watch root: bytes, no NUL, no leading `/`, no empty, `.` or `..`
/// component. The root itself is the empty path. The helper re-checks every path it receives
/// ([`RelPath::validate`]) and resolves it with `openat2(RESOLVE_BENEATH …)` from the root's fd.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(pub Vec<u8>);

impl RelPath {
    pub fn root() -> Self {
        RelPath(Vec::new())
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
    /// `self/name` (name must be a single component; checked by [`RelPath::validate`] later).
    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }
    /// Checks the shape rules above; the error names the offending part.
    pub fn validate(&self) -> Result<(), ProtoError> {
        let p = &self.0;
        if p.is_empty() {
            return Ok(());
        }
        if p.len() > 4096 {
            return Err(ProtoError::BadPath("longer than PATH_MAX"));
        }
        if p.contains(&0) {
            return Err(ProtoError::BadPath("contains NUL"));
        }
        if p[0] == b'/' {
            return Err(ProtoError::BadPath("absolute"));
        }
        for comp in p.split(|&b| b == b'/') {
            match comp {
                b"" => return Err(ProtoError::BadPath("empty component")),
                b"." | b".." => return Err(ProtoError::BadPath("dot component")),
                _ => {}
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// What a scan reports per directory entry.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// lstat size; 0 when the scan did not ask for stat data.
    pub size: u64,
    /// st_dev, for --one-file-system; 0 when not asked.
    pub dev: u64,
}

/// Result of one stat in a [`Request::Stat`] batch.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatResult {
    /// `sig`: the --modification-signature digest of the selected fields (0: none selected).
    Found {
        kind: Kind,
        size: u64,
        dev: u64,
        sig: u64,
    },
    Errno(i32),
}

/// Result of the watch of one directory in a [`Request::Walk`] batch.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchResult {
    Wd(i32),
    Errno(i32),
}

/// Part of the answer to a [`Request::Walk`] for `dirs[dir]`. A directory's chunks are
/// consecutive; the first carries the watch result (when one was asked for), the one with `last`
/// closes it, and `errno` != 0 there means the directory could not be opened or read.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub dir: u32,
    pub watch: Option<WatchResult>,
    pub entries: Vec<Entry>,
    pub last: bool,
    pub errno: i32,
}

/// Encoded size of a chunk without its entries, with slack (postcard varints).
pub const CHUNK_OVERHEAD: usize = 24;

impl Entry {
    /// Upper bound of the entry's encoded size (postcard: name length varint + name, kind,
    /// two u64 varints).
    pub fn wire_size(&self) -> usize {
        self.name.len() + 24
    }
}

/// The list files a handler template may take, in the order the template names them.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Include,
    Exclude,
}

/// Which configured program an [`Request::Exec`] runs. The helper maps it to the frozen policy;
/// the worker never names a program or an argument of its own.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerRef {
    /// The sync handler with its configured argument template.
    Sync,
    /// --pre-exit-hook, run as `[hook, label]`.
    PreExitHook,
    /// --exit-hook, run as `[hook, label]`.
    ExitHook,
}

/// clsync's `%TYPE%` words.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncType {
    /// One call per path (simple mode, or no list at all).
    Sync,
    /// A list of paths (direct, shell).
    Synclist,
    /// rsync include/exclude lists.
    Rsynclist,
    /// A recursive call for a whole tree (--have-recursive-sync).
    Initialsync,
}

impl SyncType {
    pub fn word(self) -> &'static str {
        match self {
            SyncType::Sync => "sync",
            SyncType::Synclist => "synclist",
            SyncType::Rsynclist => "rsynclist",
            SyncType::Initialsync => "initialsync",
        }
    }
}

/// The per-call values of an Exec: typed, and the paths re-checked by the helper.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CallArgs {
    pub sync_type: SyncType,
    pub event_mask: Option<u32>,
    /// For a template with `%INCLUDE-LIST%`: relative paths (empty = the root).
    pub paths: Vec<RelPath>,
}

/// clsync's status words, as the handler sees them in CLSYNC_STATUS.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Initsync,
    Running,
    SynchandlerError,
    Preexit,
    Lastsync,
    Terminating,
    /// --standby-file exists: syncs wait.
    HoldOn,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Initsync => "initsync",
            Status::Running => "running",
            Status::SynchandlerError => "synchandler error",
            Status::Preexit => "preexit",
            Status::Lastsync => "lastsync",
            Status::Terminating => "terminating",
            Status::HoldOn => "hold on",
        }
    }
}

/// The only environment facts the worker may influence: closed, typed, no free-form strings.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecEnv {
    pub status: Status,
    pub iteration: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// clsync's `eventobjtype_t`: what a path was before and after the events of a mode-so call.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjType {
    Unknown,
    DoesntExist,
    File,
    Dir,
}

impl ObjType {
    /// The C value (`EOT_UNKNOWN` 0, `EOT_DOESNTEXIST` 1, `EOT_FILE` 2, `EOT_DIR` 3).
    pub fn c_value(self) -> i32 {
        match self {
            ObjType::Unknown => 0,
            ObjType::DoesntExist => 1,
            ObjType::File => 2,
            ObjType::Dir => 3,
        }
    }
}

/// One entry of a mode-so call: clsync's `api_eventinfo_t` before it becomes C.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApiEvent {
    /// Relative to the watch root (the root is the empty path), checked by the helper.
    pub path: RelPath,
    /// The inotify bits seen for the path (any value: the handler only reads it).
    pub evmask: u32,
    /// A --have-recursive-sync call (`EVIF_RECURSIVELY`): the helper passes the path absolute,
    /// the watch dir joined with `path`, as clsync does. Refused unless configured, and only
    /// alone in its call.
    pub recursive: bool,
    pub old: ObjType,
    pub new: ObjType,
}

/// One file of a dump, in clsync's layout. The helper makes the name from these typed values
/// (the worker names no path): `instance`, `queue/<n>` and `threads/<iteration>-<num>-<pid>`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DumpFile {
    Instance,
    /// clsync's queue numbers: 0 normal, 1 big files, 2 instant, 3 lock-wait.
    Queue(u8),
    /// A running handler job (--threading): the pass's iteration, the job number, its pid.
    Thread {
        iteration: u64,
        num: u64,
        pid: i32,
    },
}

impl DumpFile {
    /// The file's path inside the dump directory, if it is one a dump may have.
    pub fn name(&self) -> Option<String> {
        match *self {
            DumpFile::Instance => Some("instance".into()),
            DumpFile::Queue(n) if n <= 3 => Some(format!("queue/{n}")),
            DumpFile::Queue(_) => None,
            DumpFile::Thread {
                iteration,
                num,
                pid,
            } if pid > 0 => Some(format!("threads/{iteration}-{num}-{pid}")),
            DumpFile::Thread { .. } => None,
        }
    }

    /// The name for messages, also for a file that is not allowed.
    pub fn describe(&self) -> String {
        match *self {
            DumpFile::Queue(n) => format!("queue/{n}"),
            DumpFile::Thread {
                iteration,
                num,
                pid,
            } => format!("threads/{iteration}-{num}-{pid}"),
            DumpFile::Instance => "instance".into(),
        }
    }
}

/// Worker → helper.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello {
        version: u32,
    },
    /// Open each directory once beneath the root, add an inotify watch through that fd (if
    /// `watch`: on the shared inotify instance, before reading, so nothing created meanwhile is
    /// missed) and list it (only subdirectories unless `files`; lstat size and device if
    /// `stat`). Answered by `Walked` datagrams, each packing chunks of many directories in
    /// order; the chunk with `last` closes a directory.
    Walk {
        dirs: Vec<RelPath>,
        watch: bool,
        files: bool,
        stat: bool,
    },
    Unwatch {
        wds: Vec<i32>,
    },
    /// lstat these paths (for the big-file queue and the rules' file type).
    Stat {
        paths: Vec<RelPath>,
    },
    /// Run a configured handler; `lists.len()` sealed memfds ride along with this datagram.
    /// `call` fills the template's per-call slots (%TYPE%, %EVENT-MASK%, %INCLUDE-LIST%).
    Exec {
        job: u64,
        handler: HandlerRef,
        lists: Vec<ListKind>,
        env: ExecEnv,
        call: CallArgs,
    },
    /// End the job's process group: SIGTERM, SIGKILL when asked a second time.
    Kill {
        job: u64,
    },
    /// The configured rules file's current content (at start and on SIGHUP: the worker cannot
    /// open files, and editors replace the file, so a kept fd would go stale).
    ReadRules,
    /// Whether the configured --standby-file exists (the helper looks; the path is the
    /// administrator's and need not be in the tree).
    Standby,
    /// Orderly end: the helper ends any handler, cleans up and exits 0.
    Shutdown,
    /// Sent by the worker's SIGSYS handler, once, just before it exits.
    Violation {
        syscall: i32,
    },
    /// Mode so: call the configured shared object's `clsyncapi_sync(n, events)` in a handler
    /// child. A call larger than a datagram is sent in parts, each but the last with
    /// `more: true` (no reply); the last gets `Started`, later `Exited` with the return value
    /// as exit code. Nothing else may come between the parts.
    SoSync {
        job: u64,
        env: ExecEnv,
        events: Vec<ApiEvent>,
        more: bool,
    },
    /// Signal 29 or the control socket's `dump`: write clsync's dump of the queues into the
    /// configured --dump-dir (the helper's path from the policy: the request names none). One
    /// sealed memfd per entry of `files` rides along, in order: `instance`, `queue/0` …
    /// `queue/3`, then one `threads/…` per running job. Answered by `Dumped`.
    Dump {
        files: Vec<DumpFile>,
    },
    /// A --custom-signals switch or the control socket's `set config-block`: every later Exec,
    /// SoSync, ReadRules, Standby, Dump and hook uses the exec policy at `index` among those the
    /// helper froze at start (0: the start configuration, then one per --custom-signals block,
    /// in order). It names no program, argument, uid or capability, only selects; an index out
    /// of range is refused. No reply.
    SelectPolicy {
        index: u32,
    },
}

/// Helper → worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Hello {
        version: u32,
    },
    /// The next chunks of the current Walk, in directory order.
    Walked {
        chunks: Vec<Chunk>,
    },
    Unwatched,
    Stats {
        results: Vec<StatResult>,
    },
    Started {
        job: u64,
        pid: i32,
    },
    /// The rules file's content; `errno` != 0 if it could not be read.
    Rules {
        text: Vec<u8>,
        errno: i32,
    },
    Standby {
        on: bool,
    },
    /// Unsolicited: a job's handler ended.
    Exited {
        job: u64,
        status: ExitStatus,
    },
    /// The request was refused; the helper audits it and ends the session.
    Refused {
        reason: String,
    },
    /// The answer to a Dump: 0 when written, else the errno (EEXIST: the directory exists).
    Dumped {
        errno: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// The peer closed the socket.
    Closed,
    /// The bytes are not a message of this protocol.
    Malformed(String),
    /// A datagram or its control data was truncated (larger than the cap).
    Truncated,
    /// The message would exceed the datagram cap.
    TooLarge,
    /// fds arrived on a message that does not declare them, or the count differs.
    UnexpectedFds {
        declared: usize,
        received: usize,
    },
    BadPath(&'static str),
    Io(Errno),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Closed => write!(f, "peer closed the channel"),
            ProtoError::Malformed(e) => write!(f, "malformed message: {e}"),
            ProtoError::Truncated => write!(f, "truncated datagram (over {MAX_DATAGRAM} bytes)"),
            ProtoError::TooLarge => write!(f, "message over {MAX_DATAGRAM} bytes"),
            ProtoError::UnexpectedFds { declared, received } => {
                write!(f, "message declares {declared} fds but carries {received}")
            }
            ProtoError::BadPath(why) => write!(f, "path not allowed: {why}"),
            ProtoError::Io(e) => write!(f, "channel I/O error: {e}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Encodes into `buf`; fails with `TooLarge` instead of exceeding it. Allocation-free, so the
/// SIGSYS handler may use it.
pub fn encode_into<'a, T: Serialize>(msg: &T, buf: &'a mut [u8]) -> Result<&'a [u8], ProtoError> {
    postcard::to_slice(msg, buf)
        .map(|s| &*s)
        .map_err(|_| ProtoError::TooLarge)
}

pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let v = postcard::to_allocvec(msg).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if v.len() > MAX_DATAGRAM {
        return Err(ProtoError::TooLarge);
    }
    Ok(v)
}

/// Total decoding: the whole datagram must be exactly one message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(ProtoError::TooLarge);
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(ProtoError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        ))),
        Err(e) => Err(ProtoError::Malformed(e.to_string())),
    }
}

/// How many fds a message declares.
pub trait DeclaresFds {
    fn declared_fds(&self) -> usize {
        0
    }
}

impl DeclaresFds for Request {
    fn declared_fds(&self) -> usize {
        match self {
            Request::Exec { lists, .. } => lists.len(),
            Request::Dump { files } => files.len(),
            _ => 0,
        }
    }
}

impl DeclaresFds for Reply {}

/// Encodes the fixed report the SIGSYS handler sends (allocation-free).
pub fn violation_report(syscall: i32, buf: &mut [u8; 64]) -> usize {
    encode_into(&Request::Violation { syscall }, buf)
        .map(|s| s.len())
        .unwrap_or(0)
}

/// The two ends of a channel: `SOCK_SEQPACKET` (one message per datagram, boundaries kept),
/// close-on-exec, buffers raised to hold a few full datagrams.
pub fn socket_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    for s in [&a, &b] {
        // Best effort: the default buffers still hold one datagram.
        let _ = setsockopt(s, sockopt::SndBuf, &(4 * MAX_DATAGRAM));
        let _ = setsockopt(s, sockopt::RcvBuf, &(4 * MAX_DATAGRAM));
    }
    Ok((a, b))
}

/// One end of the socketpair. Blocking I/O; the event loops poll the fd for readiness.
pub struct Channel {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Channel {
    pub fn new(fd: OwnedFd) -> Self {
        Channel {
            fd,
            buf: vec![0; MAX_DATAGRAM + 1],
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one message; `fds` must match what the message declares.
    pub fn send<T: Serialize + DeclaresFds>(
        &self,
        msg: &T,
        fds: &[RawFd],
    ) -> Result<(), ProtoError> {
        if msg.declared_fds() != fds.len() || fds.len() > MAX_FDS {
            return Err(ProtoError::UnexpectedFds {
                declared: msg.declared_fds(),
                received: fds.len(),
            });
        }
        let bytes = encode(msg)?;
        let iov = [IoSlice::new(&bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(ProtoError::Closed),
                Err(e) => return Err(ProtoError::Io(e)),
            }
        }
    }

    /// Sends raw bytes as one datagram (tests play a forged peer with this).
    pub fn send_raw(&self, bytes: &[u8], fds: &[RawFd]) -> Result<(), ProtoError> {
        let iov = [IoSlice::new(bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map(|_| ())
        .map_err(|e| {
            if e == Errno::EPIPE {
                ProtoError::Closed
            } else {
                ProtoError::Io(e)
            }
        })
    }

    /// Receives one message and the fds it carries. Every received fd is owned (closed on drop)
    /// even when the message is rejected.
    pub fn recv<T: DeserializeOwned + DeclaresFds>(
        &mut self,
    ) -> Result<(T, Vec<OwnedFd>), ProtoError> {
        let mut cmsg_buf = cmsg_space!([RawFd; MAX_FDS]);
        let (len, fds, truncated) = loop {
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().map_err(ProtoError::Io)? {
                        if let ControlMessageOwned::ScmRights(rs) = c {
                            for r in rs {
                                // The kernel just installed these fds in our table for us.
                                fds.push(owned(r));
                            }
                        }
                    }
                    let trunc = msg
                        .flags
                        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                    break (msg.bytes, fds, trunc);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ProtoError::Closed),
                Err(e) => return Err(ProtoError::Io(e)),
            }
        };
        if len == 0 && fds.is_empty() {
            return Err(ProtoError::Closed);
        }
        if truncated || len > MAX_DATAGRAM {
            return Err(ProtoError::Truncated);
        }
        let msg: T = decode(&self.buf[..len])?;
        if msg.declared_fds() != fds.len() {
            return Err(ProtoError::UnexpectedFds {
                declared: msg.declared_fds(),
                received: fds.len(),
            });
        }
        Ok((msg, fds))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // `OwnedFd::from_raw_fd` is an unsafe fn; the syscall layer owns that step.
    crate::sys::adopt_received_fd(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every variant's round trip: tests/randomized.rs `wire_samples_cover_every_variant_and_roundtrip`
    // (one sample set, in tests/props, shared with the fuzz seeds).

    #[test]
    fn decoding_is_total_on_garbage_and_truncation() {
        let full = encode(&Request::Walk {
            dirs: vec![RelPath(b"abc/def".to_vec()); 10],
            watch: true,
            files: false,
            stat: false,
        })
        .unwrap();
        for cut in 0..full.len() {
            assert!(
                decode::<Request>(&full[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
        let mut extra = full.clone();
        extra.push(0);
        assert!(decode::<Request>(&extra).is_err(), "trailing byte accepted");
        // Deterministic pseudo-random garbage: must never panic.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Reply>(&bytes);
        }
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_allocation() {
        // Variant 1 (Walk), then a sequence length of u32::MAX as a varint, then nothing.
        let bytes = [1u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode::<Request>(&bytes).is_err());
    }

    #[test]
    fn worst_case_batch_replies_fit_a_datagram() {
        // A Walk of MAX_BATCH unreadable directories: one chunk each, in one datagram.
        let w = Reply::Walked {
            chunks: vec![
                Chunk {
                    dir: u32::MAX,
                    watch: Some(WatchResult::Errno(i32::MIN)),
                    entries: vec![],
                    last: true,
                    errno: i32::MIN,
                };
                MAX_BATCH
            ],
        };
        let len = encode(&w).unwrap().len();
        assert!(len <= MAX_BATCH * CHUNK_OVERHEAD, "{len}");
        // Entries within their declared bound.
        let e = Entry {
            name: vec![b'x'; 255],
            kind: Kind::Other,
            size: u64::MAX,
            dev: u64::MAX,
        };
        assert!(encode(&e).unwrap().len() <= e.wire_size());
        let s = Reply::Stats {
            results: vec![
                StatResult::Found {
                    kind: Kind::Other,
                    size: u64::MAX,
                    dev: u64::MAX,
                    sig: u64::MAX,
                };
                MAX_BATCH
            ],
        };
        assert!(encode(&s).is_ok());
    }

    #[test]
    fn relpath_rules() {
        for ok in [&b""[..], b"a", b"a/b", b"-rf", b"sp ace/\xff\n"] {
            assert!(RelPath(ok.to_vec()).validate().is_ok(), "{ok:?}");
        }
        for bad in [
            &b"/etc"[..],
            b"..",
            b"a/../b",
            b"a//b",
            b"a/",
            b"./a",
            b"a\0b",
        ] {
            assert!(RelPath(bad.to_vec()).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn so_sync_roundtrips_and_truncations_fail() {
        let r = Request::SoSync {
            job: 9,
            env: ExecEnv {
                status: Status::Initsync,
                iteration: 0,
            },
            events: vec![
                ApiEvent {
                    path: RelPath::root(),
                    evmask: libc::IN_CREATE | libc::IN_ISDIR,
                    recursive: true,
                    old: ObjType::DoesntExist,
                    new: ObjType::Dir,
                },
                ApiEvent {
                    path: RelPath(b"a/b.txt".to_vec()),
                    evmask: 10,
                    recursive: false,
                    old: ObjType::File,
                    new: ObjType::Unknown,
                },
            ],
            more: false,
        };
        let b = encode(&r).unwrap();
        assert_eq!(decode::<Request>(&b).unwrap(), r);
        for cut in 0..b.len() {
            assert!(
                decode::<Request>(&b[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
        let c: Vec<i32> = [
            ObjType::Unknown,
            ObjType::DoesntExist,
            ObjType::File,
            ObjType::Dir,
        ]
        .iter()
        .map(|o| o.c_value())
        .collect();
        assert_eq!(c, [0, 1, 2, 3]);
    }

    #[test]
    fn dump_files_are_named_by_the_helper_and_bounded() {
        assert_eq!(DumpFile::Instance.name().as_deref(), Some("instance"));
        assert_eq!(DumpFile::Queue(0).name().as_deref(), Some("queue/0"));
        assert_eq!(DumpFile::Queue(3).name().as_deref(), Some("queue/3"));
        assert_eq!(DumpFile::Queue(4).name(), None);
        let t = |pid| DumpFile::Thread {
            iteration: 7,
            num: 3,
            pid,
        };
        assert_eq!(t(99).name().as_deref(), Some("threads/7-3-99"));
        assert_eq!(t(0).name(), None);
        assert_eq!(t(-1).name(), None);
        let d = Request::Dump {
            files: vec![DumpFile::Instance; MAX_DUMP_FILES],
        };
        assert_eq!(d.declared_fds(), MAX_DUMP_FILES);
        assert_eq!(MAX_FDS, MAX_DUMP_FILES);
        let r = Reply::Dumped { errno: 17 };
        assert_eq!(decode::<Reply>(&encode(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn violation_report_decodes() {
        let mut buf = [0u8; 64];
        let n = violation_report(59, &mut buf);
        assert_eq!(
            decode::<Request>(&buf[..n]).unwrap(),
            Request::Violation { syscall: 59 }
        );
    }
}
