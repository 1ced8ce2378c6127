//! The byte-moving engine: what a relaying connection's two directions are made of.
//!
//! | file | job |
//! | --- | --- |
//! | `direction.rs` | the per-direction state machine, without I/O (model-tested) |
//! | `direction_io.rs` | carries out a direction's steps on its sockets and buffer |
//! | `splice.rs` / `copy.rs` | the two engines: splice(2) through a pipe, recv/send through a buffer |
//! | `pipe.rs` | pipes (`pipe2`, `F_SETPIPE_SZ`) |
//! | `buffer.rs` | a direction's buffer (pipe or heap) and the per-worker pool it comes from |
//! | `handover.rs` | bytes a program read before it handed a connection over, read first |
//! | `low_water.rs` | the optional bulk low-water mark (`SO_RCVLOWAT`) |
//!
//! It knows nothing of routes, connections or workers: `connection/relaying.rs` drives it.

pub(crate) mod buffer;
pub(crate) mod copy;
pub(crate) mod direction;
pub(crate) mod direction_io;
pub(crate) mod handover;
pub(crate) mod low_water;
pub(crate) mod pipe;
pub(crate) mod splice;
