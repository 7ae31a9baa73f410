//! What the three handles share: the binding to their instance, the rings they currently use,
//! opening them (again, after a restart), and registering their eventfds for async waits. A
//! handle is a [`Core`] over its endpoints ([`Endpoints`]) plus what its direction needs.

use std::sync::Arc;
use std::time::Instant;

use shmplug_transport::{EndpointConfig, Park, Ring};
use tokio::io::unix::AsyncFd;

use super::Binding;
use super::reactor::{self, RingFd};
use crate::error::{Error, Result};
use crate::supervisor::slot::Slot;
use crate::supervisor::state::Supervision;

/// A handle's endpoints on its instance's rings: a receiver, a sender, or both.
pub(crate) trait Endpoints: Sized {
    /// The eventfds an async wait may sleep on, as (ring index, index in [`Ring::fds`]); the
    /// same order as [`Core::async_fds`] returns them.
    const ASYNC_FDS: &'static [(usize, usize)];

    /// Takes this handle's endpoints of `rings`.
    fn open(rings: &[Ring], config: EndpointConfig) -> shmplug_transport::Result<Self>;
}

/// The rings a handle uses now and its endpoints on them.
#[derive(Debug)]
pub(crate) struct Current<E> {
    /// The process generation the rings belong to.
    pub generation: u64,
    pub rings: Vec<Ring>,
    pub ends: E,
    /// Registered with the tokio reactor on the first async wait (see [`Endpoints::ASYNC_FDS`]).
    fds: Vec<AsyncFd<RingFd>>,
}

/// A handle's endpoints with their eventfds registered with the tokio reactor.
pub(crate) type AsyncEnds<'a, E> = (&'a mut E, &'a [AsyncFd<RingFd>]);

/// The binding and the current rings of one handle.
#[derive(Debug)]
pub(crate) struct Core<E> {
    pub binding: Binding,
    pub current: Option<Current<E>>,
}

impl<E: Endpoints> Core<E> {
    /// A core bound to `slot`, with the slot's rings taken now if it has live ones, so that
    /// tuples committed before a restart are not skipped.
    pub fn new(supervision: Arc<Supervision>, slot: Arc<Slot>) -> Core<E> {
        let mut core = Core {
            binding: Binding::new(supervision, slot),
            current: None,
        };
        if let Ok(Some((generation, rings))) = core.binding.attach(Some(Instant::now())) {
            core.current = core.open(generation, rings).ok();
        }
        core
    }

    /// Makes sure there are current rings, waiting for them until `deadline`; false if it
    /// passed first.
    pub fn attach(&mut self, deadline: Option<Instant>) -> Result<bool> {
        if self.current.is_none() {
            let Some((generation, rings)) = self.binding.attach(deadline)? else {
                return Ok(false);
            };
            self.current = Some(self.open(generation, rings)?);
        }
        Ok(true)
    }

    /// As [`attach`](Self::attach), awaiting instead of blocking, without a deadline.
    pub async fn attach_async(&mut self) -> Result<()> {
        if self.current.is_none() {
            let (generation, rings) = self.binding.attach_async().await?;
            self.current = Some(self.open(generation, rings)?);
        }
        Ok(())
    }

    fn open(&self, generation: u64, rings: Vec<Ring>) -> Result<Current<E>> {
        let config = EndpointConfig::default()
            .with_spin(self.binding.spin())
            .with_park(Park::EventFd);
        let ends = E::open(&rings, config).map_err(|e| self.binding.ids().data_error(e))?;
        Ok(Current {
            generation,
            rings,
            ends,
            fds: Vec::new(),
        })
    }

    /// The current rings' endpoints and their eventfds registered with the tokio reactor
    /// ([`Endpoints::ASYNC_FDS`]); `None` without current rings.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn async_fds(&mut self) -> Result<Option<AsyncEnds<'_, E>>> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(None);
        };
        if cur.fds.is_empty() {
            for &(ring, fd) in E::ASYNC_FDS {
                let registered = reactor::async_fd(&cur.rings[ring], fd)
                    .map_err(|e| io_error(&self.binding, e))?;
                cur.fds.push(registered);
            }
        }
        Ok(Some((&mut cur.ends, &cur.fds)))
    }

    /// The instance id.
    pub fn instance_id(&self) -> u64 {
        self.binding.ids().instance
    }

    /// The symbol.
    pub fn symbol(&self) -> &str {
        &self.binding.ids().symbol
    }

    /// The plugin's name.
    pub fn plugin(&self) -> &str {
        &self.binding.ids().plugin
    }
}

/// An error from awaiting an eventfd, as a data error of the handle's instance.
pub(crate) fn io_error(binding: &Binding, e: std::io::Error) -> Error {
    binding.ids().data_error(shmplug_transport::Error::Io {
        context: "waiting on a ring's eventfd",
        source: e,
    })
}

/// A ring that reported ready but held nothing: cannot happen with a correct peer.
pub(crate) fn spurious() -> shmplug_transport::Error {
    shmplug_transport::Error::Corrupt {
        what: "readiness",
        detail: "the ring reported a record ready but had none".into(),
    }
}
