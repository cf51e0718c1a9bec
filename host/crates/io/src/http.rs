//! The one HTTP client msh has (ureq on rustls with ring): data sets that download
//! themselves (`data/fetch.rs`) and packs in OCI registries (`plugin/oci.rs`).

use std::time::Duration;

/// An agent that hands every status back to the caller (a 404 or a 401 is an answer to
/// act on, not a transport error), with `read_timeout` for the answer and each read.
pub fn agent(read_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(read_timeout))
        .timeout_per_read(Some(read_timeout))
        .build()
        .into()
}
