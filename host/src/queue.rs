//! A bounded queue between threads that takes memory only for what it holds.
//!
//! `std::sync::mpsc::sync_channel(n)` allocates (and touches) all `n` slots up front: 2 MiB for the 65,536 event
//! lines a node must be able to queue when every guest changes state at once, held for the life of the process
//! however quiet the node is. This one is the unbounded channel (which allocates in small blocks as it fills and
//! frees them as it drains) with the bound kept by a counter: the same `try_send` contract, `Full` past `cap`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// The sending half (one producer: not `Clone`).
pub struct QueueTx<T> {
    tx: mpsc::Sender<T>,
    len: Arc<AtomicUsize>,
    cap: usize,
}

/// The receiving half.
pub struct QueueRx<T> {
    rx: mpsc::Receiver<T>,
    len: Arc<AtomicUsize>,
}

/// A queue that holds at most `cap` items.
pub fn bounded<T>(cap: usize) -> (QueueTx<T>, QueueRx<T>) {
    let (tx, rx) = mpsc::channel();
    let len = Arc::new(AtomicUsize::new(0));
    (QueueTx { tx, len: Arc::clone(&len), cap }, QueueRx { rx, len })
}

impl<T> QueueTx<T> {
    /// Queues `item`, or gives it back: `Full` when `cap` items wait, `Disconnected` when the receiver is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(item));
        }
        self.tx.send(item).map_err(|mpsc::SendError(item)| {
            self.len.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Disconnected(item)
        })
    }
}

impl<T> QueueRx<T> {
    /// The next item, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).inspect(|_| self.taken())
    }

    /// The next item if one waits.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv().inspect(|_| self.taken())
    }

    fn taken(&self) {
        self.len.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_at_the_bound_and_room_again_once_an_item_is_taken() {
        let (tx, rx) = bounded(2);
        assert!(tx.try_send(1).is_ok() && tx.try_send(2).is_ok());
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(tx.try_send(3).is_ok());
        assert_eq!((rx.try_recv(), rx.recv_timeout(Duration::ZERO)), (Ok(2), Ok(3)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(rx);
        assert!(matches!(tx.try_send(4), Err(TrySendError::Disconnected(4))));
    }
}
