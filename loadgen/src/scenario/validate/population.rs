//! `[population]`: users, spaces, channels per space, members per channel, DM share.

use crate::scenario::dist::Dist;
use crate::scenario::model::Population;
use crate::scenario::raw::RawPopulation;

pub(super) fn population(raw: &RawPopulation, p: &mut Vec<String>) -> Population {
    if raw.users == 0 {
        p.push("population.users must be at least 1".into());
    }
    let spaces = raw.spaces.unwrap_or(1);
    let cps = raw.channels_per_space.unwrap_or(1);
    if spaces == 0 || spaces > raw.users.max(1) {
        p.push(format!(
            "population.spaces must be within 1..=users, got {spaces}"
        ));
    }
    if cps == 0 {
        p.push("population.channels_per_space must be at least 1".into());
    }
    let members = raw.members.clone().unwrap_or(Dist::fixed(50.0));
    members.check("population.members", p);
    let dm_share = raw.dm_share.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&dm_share) {
        p.push(format!(
            "population.dm_share must be within 0..=1, got {dm_share}"
        ));
    }
    Population {
        users: raw.users,
        spaces,
        channels_per_space: cps,
        members,
        dm_share,
    }
}
