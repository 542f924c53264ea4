//! Link emulation and simulation: traces, trace-driven link model, the bound a perfect
//! aggregate could reach, the virtual-time harness and the real-time UDP emulator.

pub mod adaptive;
pub mod bound;
pub mod emulator;
pub mod linkmodel;
pub mod loadgen;
pub mod real;
pub mod scenario;
pub mod trace;
pub mod virt;
