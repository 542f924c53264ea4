//! Hardware attached to the edge box: cellular modems (and, later, GPIO and health).

pub mod modem;
