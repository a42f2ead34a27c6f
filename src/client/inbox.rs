//! The client's shared reply address, read without a task of its own.
//!
//! Every request in flight waits on a [`Wait`]. Whichever of them is polled
//! reads the transport's reply stream and hands each reply to the request
//! it belongs to (waking it), so a reply reaches its requester straight from
//! the broker client's connection task, as the raw clients' own
//! request/reply does; a dispatcher task in between cost one more thread
//! wake-up per request.
//!
//! The reply stream remembers only the waker of the last poll that found it
//! empty (the *reader*). When the reader's request ends — reply, timeout,
//! or dropped — it wakes another waiting request, which reads on in its
//! place; a request that takes its own reply off the stream does the same.

use crate::transport::{ReplyInbox, RequestSender};
use crate::util::id_map::IdMap;
use crate::util::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard};
use crate::wire::message::Message;
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::TryLockError;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

type Replies = Pin<Box<dyn Stream<Item = Message> + Send>>;

/// One reply address and the requests waiting for replies on it.
pub(super) struct Inbox {
    /// Put in each request's `reply_to`.
    pub(super) address: String,
    /// Publishes the requests.
    pub(super) requests: Box<dyn RequestSender>,
    state: Mutex<InboxState>,
    /// `None` once the stream has ended.
    replies: Mutex<Option<Replies>>,
    /// The reply stream ended (the connection or its channel went away):
    /// read by every request without taking `state`'s lock, set under it.
    closed: AtomicBool,
    next_ticket: AtomicU64,
}

/// The requests in flight, and which of them reads the reply stream.
#[derive(Default)]
struct InboxState {
    /// Requests in flight by correlation id.
    waiting: IdMap<Waiting>,
    /// The request whose waker the reply stream holds; `None` when no
    /// waiting request is known to hold it.
    reader: Option<u64>,
}

/// One request in flight: its reply once it has come, and its waker.
#[derive(Default)]
struct Waiting {
    reply: Option<Message>,
    waker: Option<Waker>,
}

impl InboxState {
    /// The waker of a waiting request other than `id`'s, to read the
    /// stream next. Woken only once the locks are released: a request woken
    /// while the stream is still locked would find it busy and wait, with
    /// nobody left reading.
    fn next_reader(&mut self, id: &str) -> Option<Waker> {
        self.reader = None;
        self.waiting
            .iter_mut()
            .filter(|(waiting, _)| waiting.as_str() != id)
            .find_map(|(_, slot)| slot.waker.take())
    }
}

impl Inbox {
    pub(super) fn new(opened: ReplyInbox) -> Self {
        Inbox {
            address: opened.address,
            requests: opened.requests,
            state: Mutex::default(),
            replies: Mutex::new(Some(opened.replies)),
            closed: AtomicBool::new(false),
            next_ticket: AtomicU64::new(0),
        }
    }

    /// Whether replies can still arrive here and requests be sent.
    pub(super) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.requests.is_open()
    }

    /// Waits for the reply with correlation id `id`; register it before the
    /// request is sent, so a fast reply finds its place. Also says how many
    /// requests now await replies here, this one included.
    pub(super) fn wait<'a>(&'a self, id: &'a str) -> (Wait<'a>, usize) {
        // Allocated and freed outside the lock, which every request and
        // reply takes (with 64 in flight on two threads it was contended).
        let key = id.to_owned();
        let (in_flight, replaced) = {
            let mut state = self.state();
            let replaced = state.waiting.insert(key, Waiting::default());
            (state.waiting.len(), replaced)
        };
        drop(replaced);
        let wait = Wait {
            inbox: self,
            id,
            ticket: self.next_ticket.fetch_add(1, Ordering::Relaxed),
            done: false,
        };
        (wait, in_flight)
    }

    /// Requests waiting (tests).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.state().waiting.len()
    }

    fn state(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request's wait for its reply: `None` if the reply address closed first.
pub(super) struct Wait<'a> {
    inbox: &'a Inbox,
    id: &'a str,
    ticket: u64,
    /// Its entry left with its reply, under the lock that took the reply:
    /// nothing is left for `Drop` (one lock less per request).
    done: bool,
}

impl Future for Wait<'_> {
    type Output = Option<Message>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = self.get_mut();
        {
            let mut state = this.inbox.state();
            let closed = this.inbox.closed.load(Ordering::Acquire);
            let Some(slot) = state.waiting.get_mut(this.id) else {
                return Poll::Ready(None);
            };
            if let Some(reply) = slot.reply.take() {
                let (next, removed) = this.leave(&mut state, false);
                drop(state);
                drop(removed);
                if let Some(waker) = next {
                    waker.wake();
                }
                return Poll::Ready(Some(reply));
            }
            if closed {
                return Poll::Ready(None);
            }
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
        }
        // Another request is reading right now: it hands us our reply.
        let mut replies = match this.inbox.replies.try_lock() {
            Ok(replies) => replies,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Poll::Pending,
        };
        loop {
            let Some(stream) = replies.as_mut() else {
                return Poll::Ready(None);
            };
            match stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(reply)) => {
                    let mut state = this.inbox.state();
                    state.reader = None;
                    match reply.correlation_id.as_deref() {
                        Some(id) if id == this.id => {
                            // It reads no more: another waiting request
                            // takes over.
                            let (next, removed) = this.leave(&mut state, true);
                            drop(state);
                            drop(replies);
                            drop(removed);
                            if let Some(waker) = next {
                                waker.wake();
                            }
                            return Poll::Ready(Some(reply));
                        }
                        Some(id) => match state.waiting.get_mut(id) {
                            Some(slot) => {
                                // Its request finds the reply in its slot and
                                // does not need the stream.
                                slot.reply = Some(reply);
                                let waker = slot.waker.take();
                                drop(state);
                                if let Some(waker) = waker {
                                    waker.wake();
                                }
                            }
                            None => tracing::debug!(
                                correlation_id = crate::util::log_text::Logged::id(id).value(),
                                "reply for no waiting request (timed out?); dropped"
                            ),
                        },
                        None => tracing::debug!("reply without a correlation id; dropped"),
                    }
                }
                Poll::Ready(None) => {
                    *replies = None;
                    drop(replies);
                    let wakers: Vec<Waker> = {
                        let mut state = this.inbox.state();
                        this.inbox.closed.store(true, Ordering::Release);
                        state
                            .waiting
                            .values_mut()
                            .filter_map(|slot| slot.waker.take())
                            .collect()
                    };
                    wakers.into_iter().for_each(Waker::wake);
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    this.inbox.state().reader = Some(this.ticket);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Wait<'_> {
    /// Takes this request's entry out of `state` and, if it was reading
    /// (`reading`, or the stream holds its waker), finds the next reader:
    /// its waker, to wake once the locks are released, and the entry, to
    /// drop then.
    fn leave(&mut self, state: &mut InboxState, reading: bool) -> (Option<Waker>, Option<(String, Waiting)>) {
        self.done = true;
        let removed = state.waiting.remove_entry(self.id);
        let next = if reading || state.reader == Some(self.ticket) {
            state.next_reader(self.id)
        } else {
            None
        };
        (next, removed)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inbox = self.inbox;
        let (next, removed) = self.leave(&mut inbox.state(), false);
        drop(removed);
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

/// Model tests (`RUSTFLAGS="--cfg wharf_loom"`): every interleaving of a request
/// giving up (perhaps while it reads the reply stream, perhaps as its reply
/// arrives) and another waiting for its own reply.
#[cfg(all(test, wharf_loom))]
mod loom_tests {
    use super::*;
    use crate::error::BrokerError;
    use crate::transport::BoxFuture;
    use std::collections::VecDeque;
    use std::sync::Arc;

    struct Unused;

    impl RequestSender for Unused {
        fn send(&self, _: &str, _: Message) -> BoxFuture<'_, Result<(), BrokerError>> {
            unreachable!("the model sends no requests")
        }
    }

    /// The broker's side of the reply address.
    #[derive(Default)]
    struct Channel {
        replies: VecDeque<Message>,
        waker: Option<Waker>,
    }

    struct Replies(Arc<Mutex<Channel>>);

    impl Stream for Replies {
        type Item = Message;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
            let mut channel = self.0.lock().unwrap();
            match channel.replies.pop_front() {
                Some(reply) => Poll::Ready(Some(reply)),
                None => {
                    channel.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    fn reply(channel: &Mutex<Channel>, id: &str) {
        let waker = {
            let mut channel = channel.lock().unwrap();
            let reply = Message::new(id.to_owned()).with_correlation_id(id);
            channel.replies.push_back(reply);
            channel.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    #[test]
    fn loom_a_request_giving_up_leaves_the_stream_to_another() {
        loom::model(|| {
            let channel = Arc::new(Mutex::new(Channel::default()));
            let inbox = Arc::new(Inbox::new(ReplyInbox {
                address: "inbox".into(),
                replies: Box::pin(Replies(channel.clone())),
                requests: Box::new(Unused),
            }));
            // Request `a` reads the stream once (finding nothing, it may
            // be the reader), then gives up: its timeout, or its caller
            // dropped it.
            let gives_up = {
                let inbox = inbox.clone();
                loom::thread::spawn(move || {
                    let (mut wait, _) = inbox.wait("a");
                    let mut cx = Context::from_waker(Waker::noop());
                    let _ = Pin::new(&mut wait).poll(&mut cx);
                })
            };
            // Request `b` waits for its reply; the replies to both are
            // sent once it is registered, `a`'s as `a` may be leaving.
            let (wait, _) = inbox.wait("b");
            let replier = {
                let channel = channel.clone();
                loom::thread::spawn(move || {
                    reply(&channel, "a");
                    reply(&channel, "b");
                })
            };
            // A request left waiting with nobody reading for it is a
            // deadlock to loom.
            let got = loom::future::block_on(wait).expect("a reply");
            assert_eq!(got.correlation_id.as_deref(), Some("b"));
            replier.join().unwrap();
            gives_up.join().unwrap();
            assert_eq!(inbox.waiting(), 0, "no request left behind");
        });
    }
}
