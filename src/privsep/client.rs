//! The worker's side of the channel: typed calls to the helper. Replies come in order; the only
//! unsolicited message, `Exited`, may arrive between them and is set aside for the event loop.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::privsep::protocol::{
    CallArgs, Channel, Chunk, ExecEnv, ExitStatus, HandlerRef, ListKind, ProtoError, RelPath,
    Reply, Request, StatResult, MAX_DATAGRAM, VERSION,
};
// Mode so and dumps (kept apart from the list above).
use crate::privsep::protocol::{ApiEvent, DumpFile};

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
    /// Walks sent and not yet received: (directories, watch asked).
    walks: VecDeque<(usize, bool)>,
}

impl Client {
    pub fn new(chan: Channel) -> Self {
        Client {
            chan,
            exits: VecDeque::new(),
            walks: VecDeque::new(),
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

    /// Sends a request that expects a reply: replies come in order, so none may be asked while
    /// a Walk's answer is still on the way.
    fn ask(&mut self, r: &Request, fds: &[RawFd]) -> Result<()> {
        if !self.walks.is_empty() {
            return Err(ClientError::Unexpected(
                "a request while a Walk is in flight",
            ));
        }
        Ok(self.chan.send(r, fds)?)
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

    pub fn unwatch(&mut self, wds: Vec<i32>) -> Result<()> {
        if wds.is_empty() {
            return Ok(());
        }
        self.ask(&Request::Unwatch { wds }, &[])?;
        match self.next()? {
            Reply::Unwatched => Ok(()),
            _ => Err(ClientError::Unexpected("Unwatch")),
        }
    }

    /// Sends a Walk of `dirs` (see [`Request::Walk`]); its answer is read by
    /// [`Client::walk_recv`], in the order the walks were sent. Several may be in flight, so the
    /// helper reads the next batch while the worker takes in the last one; no other request
    /// may be made until every walk sent has been received.
    pub fn walk_send(
        &mut self,
        dirs: Vec<RelPath>,
        watch: bool,
        files: bool,
        stat: bool,
    ) -> Result<()> {
        let n = dirs.len();
        self.chan.send(
            &Request::Walk {
                dirs,
                watch,
                files,
                stat,
            },
            &[],
        )?;
        self.walks.push_back((n, watch));
        Ok(())
    }

    /// Receives the oldest Walk in flight, calling `each(dir_index, chunk)` per chunk, in order.
    /// A reply out of order, a watch result missing or unasked, or a chunk beyond the
    /// request's directories is a protocol error.
    pub fn walk_recv(&mut self, mut each: impl FnMut(usize, Chunk)) -> Result<()> {
        let Some((n, watch)) = self.walks.pop_front() else {
            return Err(ClientError::Unexpected("Walk receive without a Walk sent"));
        };
        let bad = ClientError::Unexpected("Walked");
        let mut done = 0;
        let mut first = true;
        while done < n {
            let Reply::Walked { chunks } = self.next()? else {
                return Err(bad);
            };
            if chunks.is_empty() {
                return Err(bad);
            }
            for c in chunks {
                if done >= n || c.dir as usize != done || c.watch.is_some() != (watch && first) {
                    return Err(bad);
                }
                first = c.last;
                if c.last {
                    done += 1;
                }
                each(c.dir as usize, c);
            }
        }
        Ok(())
    }

    pub fn stat(&mut self, paths: Vec<RelPath>) -> Result<Vec<StatResult>> {
        let n = paths.len();
        if n == 0 {
            return Ok(vec![]);
        }
        self.ask(&Request::Stat { paths }, &[])?;
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
        self.ask(
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
        self.ask(&Request::ReadRules, &[])?;
        match self.next()? {
            Reply::Rules { errno: 0, text } => Ok(Ok(text)),
            Reply::Rules { errno, .. } => Ok(Err(errno)),
            _ => Err(ClientError::Unexpected("ReadRules")),
        }
    }

    /// Whether the --standby-file exists now.
    pub fn standby(&mut self) -> Result<bool> {
        self.ask(&Request::Standby, &[])?;
        match self.next()? {
            Reply::Standby { on } => Ok(on),
            _ => Err(ClientError::Unexpected("Standby")),
        }
    }

    /// Asks for a dump into the configured --dump-dir: `files` in clsync's layout, each a
    /// sealed memfd. Ok(0) when written, Ok(errno) when the directory could not be (EEXIST).
    pub fn dump(&mut self, files: Vec<(DumpFile, OwnedFd)>) -> Result<i32> {
        let names: Vec<DumpFile> = files.iter().map(|(f, _)| *f).collect();
        let fds: Vec<_> = files.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        self.ask(&Request::Dump { files: names }, &fds)?;
        drop(files);
        match self.next()? {
            Reply::Dumped { errno } => Ok(errno),
            _ => Err(ClientError::Unexpected("Dump")),
        }
    }

    pub fn kill(&mut self, job: u64) -> Result<()> {
        Ok(self.chan.send(&Request::Kill { job }, &[])?)
    }

    /// Selects the helper's exec policy `index` (a --custom-signals block); no reply.
    pub fn select_policy(&mut self, index: u32) -> Result<()> {
        Ok(self.chan.send(&Request::SelectPolicy { index }, &[])?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privsep::protocol::{Entry, Kind, WatchResult};

    fn pair() -> (Client, Channel) {
        let (a, b) = crate::privsep::protocol::socket_pair().unwrap();
        (Client::new(Channel::new(a)), Channel::new(b))
    }

    fn chunk(dir: u32, watch: Option<i32>, names: &[&str], last: bool) -> Chunk {
        Chunk {
            dir,
            watch: watch.map(WatchResult::Wd),
            entries: names
                .iter()
                .map(|n| Entry {
                    name: n.as_bytes().to_vec(),
                    kind: Kind::Dir,
                    size: 0,
                    dev: 0,
                })
                .collect(),
            last,
            errno: 0,
        }
    }

    fn walk(replies: Vec<Vec<Chunk>>) -> Result<Vec<(usize, Vec<u8>)>> {
        let (mut c, helper) = pair();
        c.walk_send(
            vec![RelPath::root(), RelPath(b"a".to_vec())],
            true,
            false,
            false,
        )?;
        for chunks in replies {
            helper.send(&Reply::Walked { chunks }, &[]).unwrap();
        }
        let mut got = Vec::new();
        c.walk_recv(|i, ch| {
            for e in ch.entries {
                got.push((i, e.name));
            }
        })?;
        Ok(got)
    }

    #[test]
    fn walk_answers_split_over_datagrams_are_joined_in_order() {
        let got = walk(vec![
            vec![chunk(0, Some(1), &["x"], false)],
            vec![chunk(0, None, &["y"], true), chunk(1, Some(2), &[], false)],
            vec![chunk(1, None, &["z"], true)],
        ])
        .unwrap();
        let want = vec![(0, b"x".to_vec()), (0, b"y".to_vec()), (1, b"z".to_vec())];
        assert_eq!(got, want);
    }

    #[test]
    fn walk_answers_out_of_order_or_inconsistent_are_errors() {
        let bad = [
            // directory 1 before 0 is closed
            vec![vec![
                chunk(0, Some(1), &[], false),
                chunk(1, Some(2), &[], true),
            ]],
            // no watch result although one was asked
            vec![vec![
                chunk(0, None, &[], true),
                chunk(1, Some(2), &[], true),
            ]],
            // a watch result on a continuation chunk
            vec![vec![
                chunk(0, Some(1), &[], false),
                chunk(0, Some(1), &[], true),
            ]],
            // a chunk beyond the request's directories
            vec![vec![
                chunk(0, Some(1), &[], true),
                chunk(1, Some(2), &[], true),
                chunk(2, Some(3), &[], true),
            ]],
            // an empty datagram
            vec![vec![]],
        ];
        for replies in bad {
            let what = format!("{replies:?}");
            assert!(
                matches!(walk(replies), Err(ClientError::Unexpected(_))),
                "{what}"
            );
        }
    }

    #[test]
    fn no_other_request_while_a_walk_is_in_flight() {
        let (mut c, _helper) = pair();
        c.walk_send(vec![RelPath::root()], false, false, false)
            .unwrap();
        assert!(matches!(
            c.stat(vec![RelPath::root()]),
            Err(ClientError::Unexpected(_))
        ));
    }
}
