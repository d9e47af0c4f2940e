//! Mail from helper threads to one core: a crossbeam channel per core plus a prompt wake. The
//! senders are the `zring-inpod` thread (a pod's listeners, a pod's removal) and the
//! `zring-podns` socket factory (an upstream socket made inside a pod's netns); the receiver is
//! the core's pod task (`runtime::pods`).
//!
//! Threads: [`Mailbox`] is `Send + Clone` (any thread); [`Inbox`] moves once into its core's
//! thread and becomes a [`CoreInbox`] there, awaited with monoio. monoio here has no cross-thread
//! wakers, so the wake is a byte on a Unix socketpair whose read end the core's task awaits: the
//! core hears of new mail at once, not at its next 100 ms housekeeping tick.
//!
//! Invariant (no lost wake-up): a sender queues the mail *before* writing the wake byte, and the
//! core drains the queue *after* reading wake bytes; mail queued after a drain always has a byte
//! of its own still unread. A full socket buffer (a write that would block) means bytes are
//! already waiting, so it is not an error.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use monoio::io::AsyncReadRent;

use super::pod::{PodCtx, PodPort};

/// What a core is told.
#[derive(Debug)]
pub enum CoreMail {
    /// Serve `pod` with these listeners (already bound inside its netns, one per port); answer
    /// on `done` once they accept.
    AddPod {
        pod: Arc<PodCtx>,
        listeners: Vec<(PodPort, std::net::TcpListener)>,
        /// The DNS proxy's sockets inside the pod (IPv4, and IPv6 when the pod has it), when
        /// the proxy is on.
        dns: Vec<super::factory::DnsSockets>,
        done: Sender<CoreAnswer>,
    },
    /// Stop serving the pod `uid`: close its listeners now, end its connections within the
    /// drain deadline; answer once the listeners are closed.
    RemovePod {
        uid: String,
        done: Sender<CoreAnswer>,
    },
    /// The upstream socket request `id` of this core, answered by the socket factory.
    Upstream {
        id: u64,
        socket: io::Result<OwnedFd>,
    },
}

/// A core's answer to [`CoreMail::AddPod`] or [`CoreMail::RemovePod`].
#[derive(Debug)]
pub struct CoreAnswer {
    pub core: usize,
    pub result: Result<(), String>,
}

/// The core has stopped (its thread ended): nothing can be delivered to it.
#[derive(Debug, thiserror::Error)]
#[error("core {0} is not running")]
pub struct CoreGone(pub usize);

/// The sending side of one core's mail. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mailbox {
    core: usize,
    tx: Sender<CoreMail>,
    wake: Arc<UnixStream>,
}

impl Mailbox {
    pub fn core(&self) -> usize {
        self.core
    }

    /// Queues `mail` and wakes the core. Never blocks.
    pub fn send(&self, mail: CoreMail) -> Result<(), CoreGone> {
        self.tx.send(mail).map_err(|_| CoreGone(self.core))?;
        match (&*self.wake).write(&[1]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.rewake(),
            Err(_) => Err(CoreGone(self.core)),
        }
    }

    fn rewake(&self) -> Result<(), CoreGone> {
        match (&*self.wake).write(&[1]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(CoreGone(self.core)),
        }
    }
}

/// The receiving side, before it moves into its core's thread.
#[derive(Debug)]
pub struct Inbox {
    core: usize,
    rx: Receiver<CoreMail>,
    wake: UnixStream,
    /// The core's own address, for replies it asks others to send (upstream sockets).
    own: Mailbox,
}

/// A mailbox and its inbox for core `core`.
pub fn pair(core: usize) -> io::Result<(Mailbox, Inbox)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (write, read) = UnixStream::pair()?;
    write.set_nonblocking(true)?;
    read.set_nonblocking(true)?;
    let mailbox = Mailbox {
        core,
        tx,
        wake: Arc::new(write),
    };
    let inbox = Inbox {
        core,
        rx,
        wake: read,
        own: mailbox.clone(),
    };
    Ok((mailbox, inbox))
}

/// Mailboxes and inboxes for `cores` cores, in core order.
pub fn pairs(cores: usize) -> io::Result<(Vec<Mailbox>, Vec<Inbox>)> {
    (0..cores)
        .map(pair)
        .collect::<io::Result<Vec<_>>>()
        .map(|v| v.into_iter().unzip())
}

impl Inbox {
    pub fn core(&self) -> usize {
        self.core
    }

    /// Registers the wake socket with the calling core's monoio runtime.
    pub fn into_core(self) -> io::Result<CoreInbox> {
        Ok(CoreInbox {
            rx: self.rx,
            wake: monoio::net::UnixStream::from_std(self.wake)?,
            buf: Some(vec![0; 64]),
            own: self.own,
        })
    }
}

/// The core's side of its mail, awaited by its pod task.
#[derive(Debug)]
pub struct CoreInbox {
    rx: Receiver<CoreMail>,
    wake: monoio::net::UnixStream,
    /// The wake read's buffer (owned by the read while it is pending under io_uring).
    buf: Option<Vec<u8>>,
    own: Mailbox,
}

impl CoreInbox {
    /// This core's own mailbox (the reply address for the socket factory).
    pub fn own(&self) -> &Mailbox {
        &self.own
    }

    /// The mail queued now, waiting for a wake when there is none. `Err` only if the wake
    /// socket fails, which leaves the core deaf to in-pod mail.
    pub async fn recv(&mut self) -> io::Result<Vec<CoreMail>> {
        loop {
            let ready: Vec<CoreMail> = self.rx.try_iter().collect();
            if !ready.is_empty() {
                return Ok(ready);
            }
            let buf = self.buf.take().unwrap_or_else(|| vec![0; 64]);
            let (r, buf) = self.wake.read(buf).await;
            self.buf = Some(buf);
            match r {
                // This inbox holds a mailbox of its own, so the write end never closes; a 0
                // would be a kernel surprise, handled like an error rather than spun on.
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test_all(timer_enabled = true)]
    async fn mail_from_another_thread_wakes_the_core_at_once() {
        let (mailbox, inbox) = pair(3).unwrap();
        assert_eq!((mailbox.core(), inbox.core()), (3, 3));
        let mut inbox = inbox.into_core().unwrap();
        let sender = std::thread::spawn(move || {
            for id in 0..100 {
                mailbox
                    .send(CoreMail::Upstream {
                        id,
                        socket: Err(io::Error::from(io::ErrorKind::Other)),
                    })
                    .unwrap();
            }
        });
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let batch = monoio::time::timeout(std::time::Duration::from_secs(5), inbox.recv())
                .await
                .expect("woken within 5 s")
                .unwrap();
            for mail in batch {
                match mail {
                    CoreMail::Upstream { id, .. } => seen.push(id),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        sender.join().unwrap();
        assert_eq!(seen, (0..100).collect::<Vec<_>>(), "in order, none lost");
    }
}
