//! The `flowline` harness: runs scenarios against a cluster it brings up (work in progress).
