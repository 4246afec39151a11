//! The worker's side of the channel: typed calls to the helper. Replies come in order; the only
//! unsolicited message, `Exited`, may arrive between them and is set aside for the event loop.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::privsep::protocol::{
    CallArgs, Channel, Entry, ExecEnv, ExitStatus, HandlerRef, ListKind, ProtoError, RelPath,
    Reply, Request, StatResult, WatchResult, MAX_DATAGRAM, VERSION,
};
// Mode so (kept apart from the list above).
use crate::privsep::protocol::ApiEvent;

/// Room a path takes in a batched request (postcard: length varint + bytes), with slack.
pub fn path_cost(p: &RelPath) -> usize {
    p.as_bytes().len() + 4
}

/// Budget for the paths of one batched request.
pub const BATCH_BYTES: usize = MAX_DATAGRAM - 1024;

#[derive(Debug)]
pub enum ClientError {
    Proto(ProtoError),
    /// The helper refused a request (and is ending the session).
    Refused(String),
    /// A reply that does not answer the request.
    Unexpected(&'static str),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Proto(ProtoError::Closed) => write!(f, "the privileged helper is gone"),
            ClientError::Proto(e) => write!(f, "talking to the helper: {e}"),
            ClientError::Refused(r) => write!(f, "the helper refused a request: {r}"),
            ClientError::Unexpected(what) => write!(f, "unexpected reply from the helper ({what})"),
        }
    }
}

impl From<ProtoError> for ClientError {
    fn from(e: ProtoError) -> Self {
        ClientError::Proto(e)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

pub struct Client {
    chan: Channel,
    exits: VecDeque<(u64, ExitStatus)>,
}

impl Client {
    pub fn new(chan: Channel) -> Self {
        Client {
            chan,
            exits: VecDeque::new(),
        }
    }

    /// The raw channel, for the test-only forged requests.
    #[cfg(feature = "test-hooks")]
    pub fn channel(&self) -> &Channel {
        &self.chan
    }

    pub fn handshake(&mut self) -> Result<()> {
        self.chan.send(&Request::Hello { version: VERSION }, &[])?;
        match self.next()? {
            Reply::Hello { version } if version == VERSION => Ok(()),
            Reply::Hello { .. } => Err(ClientError::Unexpected("Hello with another version")),
            _ => Err(ClientError::Unexpected("not Hello")),
        }
    }

    /// Next reply that is not an `Exited` (those are queued for [`Client::take_exits`]).
    fn next(&mut self) -> Result<Reply> {
        loop {
            let (r, _fds) = self.chan.recv::<Reply>()?;
            match r {
                Reply::Exited { job, status } => self.exits.push_back((job, status)),
                Reply::Refused { reason } => return Err(ClientError::Refused(reason)),
                r => return Ok(r),
            }
        }
    }

    /// Reads whatever the helper sent unprompted (call when the fd is readable).
    pub fn pump(&mut self) -> Result<()> {
        let (r, _fds) = self.chan.recv::<Reply>()?;
        match r {
            Reply::Exited { job, status } => {
                self.exits.push_back((job, status));
                Ok(())
            }
            Reply::Refused { reason } => Err(ClientError::Refused(reason)),
            _ => Err(ClientError::Unexpected("unsolicited reply")),
        }
    }

    pub fn take_exits(&mut self) -> Vec<(u64, ExitStatus)> {
        self.exits.drain(..).collect()
    }

    pub fn watch(&mut self, dirs: Vec<RelPath>) -> Result<Vec<WatchResult>> {
        let n = dirs.len();
        self.chan.send(&Request::Watch { dirs }, &[])?;
        match self.next()? {
            Reply::Watched { results } if results.len() == n => Ok(results),
            _ => Err(ClientError::Unexpected("Watch")),
        }
    }

    pub fn unwatch(&mut self, wds: Vec<i32>) -> Result<()> {
        if wds.is_empty() {
            return Ok(());
        }
        self.chan.send(&Request::Unwatch { wds }, &[])?;
        match self.next()? {
            Reply::Unwatched => Ok(()),
            _ => Err(ClientError::Unexpected("Unwatch")),
        }
    }

    /// Scans `dirs`, calling `each(dir_index, entries, errno)` per streamed chunk.
    pub fn scan(
        &mut self,
        dirs: Vec<RelPath>,
        files: bool,
        stat: bool,
        mut each: impl FnMut(usize, Vec<Entry>, i32),
    ) -> Result<()> {
        let n = dirs.len();
        self.chan.send(&Request::Scan { dirs, files, stat }, &[])?;
        let mut done = 0;
        while done < n {
            match self.next()? {
                Reply::Entries {
                    dir,
                    entries,
                    last,
                    errno,
                } if (dir as usize) == done => {
                    each(done, entries, errno);
                    if last {
                        done += 1;
                    }
                }
                _ => return Err(ClientError::Unexpected("Scan")),
            }
        }
        Ok(())
    }

    pub fn stat(&mut self, paths: Vec<RelPath>) -> Result<Vec<StatResult>> {
        let n = paths.len();
        if n == 0 {
            return Ok(vec![]);
        }
        self.chan.send(&Request::Stat { paths }, &[])?;
        match self.next()? {
            Reply::Stats { results } if results.len() == n => Ok(results),
            _ => Err(ClientError::Unexpected("Stat")),
        }
    }

    pub fn exec(
        &mut self,
        job: u64,
        lists: Vec<(ListKind, OwnedFd)>,
        env: ExecEnv,
        call: CallArgs,
    ) -> Result<i32> {
        self.exec_handler(HandlerRef::Sync, job, lists, env, call)
    }

    pub fn exec_handler(
        &mut self,
        handler: HandlerRef,
        job: u64,
        lists: Vec<(ListKind, OwnedFd)>,
        env: ExecEnv,
        call: CallArgs,
    ) -> Result<i32> {
        let kinds: Vec<ListKind> = lists.iter().map(|(k, _)| *k).collect();
        let fds: Vec<_> = lists.iter().map(|(_, f)| f.as_raw_fd()).collect();
        self.chan.send(
            &Request::Exec {
                job,
                handler,
                lists: kinds,
                env,
                call,
            },
            &fds,
        )?;
        drop(lists);
        match self.next()? {
            Reply::Started { job: j, pid } if j == job => Ok(pid),
            _ => Err(ClientError::Unexpected("Exec")),
        }
    }

    /// The rules file's content as the helper reads it now: Ok(Err(errno)) if it cannot.
    pub fn read_rules(&mut self) -> Result<std::result::Result<Vec<u8>, i32>> {
        self.chan.send(&Request::ReadRules, &[])?;
        match self.next()? {
            Reply::Rules { errno: 0, text } => Ok(Ok(text)),
            Reply::Rules { errno, .. } => Ok(Err(errno)),
            _ => Err(ClientError::Unexpected("ReadRules")),
        }
    }

    /// Whether the --standby-file exists now.
    pub fn standby(&mut self) -> Result<bool> {
        self.chan.send(&Request::Standby, &[])?;
        match self.next()? {
            Reply::Standby { on } => Ok(on),
            _ => Err(ClientError::Unexpected("Standby")),
        }
    }

    pub fn kill(&mut self, job: u64) -> Result<()> {
        Ok(self.chan.send(&Request::Kill { job }, &[])?)
    }

    pub fn shutdown(&mut self) -> Result<()> {
        Ok(self.chan.send(&Request::Shutdown, &[])?)
    }

    /// Mode so: one clsyncapi_sync call with `events`, sent in as many parts as datagrams need
    /// (the helper answers the last one); returns the child's pid.
    pub fn so_sync(&mut self, job: u64, env: ExecEnv, events: Vec<ApiEvent>) -> Result<i32> {
        let mut parts: Vec<Vec<ApiEvent>> = vec![Vec::new()];
        let mut cost = 0;
        for e in events {
            // postcard: the path's length and bytes, the mask (≤ 5), three one-byte fields.
            let c = path_cost(&e.path) + 12;
            if cost + c > BATCH_BYTES && parts.last().is_some_and(|p| !p.is_empty()) {
                parts.push(Vec::new());
                cost = 0;
            }
            cost += c;
            if let Some(p) = parts.last_mut() {
                p.push(e);
            }
        }
        let n = parts.len();
        for (i, events) in parts.into_iter().enumerate() {
            let more = i + 1 < n;
            self.chan.send(
                &Request::SoSync {
                    job,
                    env,
                    events,
                    more,
                },
                &[],
            )?;
        }
        match self.next()? {
            Reply::Started { job: j, pid } if j == job => Ok(pid),
            _ => Err(ClientError::Unexpected("SoSync")),
        }
    }
}

impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.chan.as_fd()
    }
}
