//! What msh writes and fetches: files replaced atomically, and the one HTTP client.

pub mod atomic_file;
pub mod http;
