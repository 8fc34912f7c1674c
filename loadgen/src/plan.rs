//! The deterministic population plan (users, spaces, channels, membership, DMs, personas)
//! built from a scenario and its seed, and its provisioning through the node's admin API.
//!
//! ```text
//! Scenario + seed ──layout()──▶ Layout (pure: indices only)
//!                                   │ POST /api/v1/admin/provision (x-flowline-admin)
//!                                   ▼
//!                                 Plan (ids + tokens) ──▶ plan.json ──▶ workers
//! ```
//! Same seed ⇒ same layout; the ids and tokens come from the node.

use std::path::Path;
use std::time::Duration;

use flowline_protocol::api::{
    ADMIN_HEADER, ApiErrorBody, Provision, ProvisionChannel, ProvisionSpace, Provisioned,
};
use flowline_protocol::{ChannelId, UserId};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{LoadgenError, Result};
use crate::scenario::Scenario;

/// Most connections one worker process holds (the process file limit is 20k).
pub const MAX_USERS_PER_WORKER: usize = 15_000;

/// Stream ids of the per-purpose random generators (ChaCha streams), so adding a random
/// choice in one place does not shift the others.
pub(crate) mod stream {
    /// Layout: space membership, channel members, DMs.
    pub const LAYOUT: u64 = 1;
    /// Base of per-user streams (persona, schedule): `USER + index`.
    pub const USER: u64 = 1 << 32;
}

/// The random generator of a user: same seed and index ⇒ same sequence, whichever
/// worker runs the user.
pub fn user_rng(seed: u64, user: u32, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(stream::USER + u64::from(user));
    rng
}

/// The generator a user keeps for the whole run (its schedule, its feature traffic):
/// xoshiro256++, 32 bytes of state against ChaCha8's ~330, seeded from the user's ChaCha
/// stream ([`user_rng`]), so it is as deterministic and as independent per user and
/// purpose. With 100k users a worker holds two per user: ~600 bytes each saved.
pub type UserRng = rand_xoshiro::Xoshiro256PlusPlus;

/// The [`UserRng`] of `user` for `purpose`.
pub fn kept_user_rng(seed: u64, user: u32, purpose: u64) -> UserRng {
    UserRng::from_rng(&mut user_rng(seed, user, purpose))
}

/// The population as indices, derived from the scenario and seed only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Number of users.
    pub users: u32,
    /// Persona index of each user.
    pub personas: Vec<u32>,
    /// Spaces with their members and channels.
    pub spaces: Vec<LayoutSpace>,
    /// DM pairs (user indices).
    pub dms: Vec<(u32, u32)>,
}

/// A space of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutSpace {
    /// Member user indices; the first is the owner.
    pub members: Vec<u32>,
    /// Private channels: member user indices of each.
    pub channels: Vec<Vec<u32>>,
}

/// The persona index of user `u` (drawn by weight from the user's own random stream).
fn persona_of(s: &Scenario, u: u32) -> u32 {
    let mut rng = user_rng(s.seed, u, 0);
    pick_weighted(&mut rng, s.personas.iter().map(|p| p.weight))
}

/// Build the layout of a scenario (pure and deterministic).
pub fn layout(s: &Scenario) -> Layout {
    let pop = &s.population;
    let users = pop.users;
    let personas = (0..users).map(|u| persona_of(s, u)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    rng.set_stream(stream::LAYOUT);
    let mut spaces = Vec::with_capacity(pop.spaces as usize);
    for sp in 0..pop.spaces {
        let members: Vec<u32> = (sp..users).step_by(pop.spaces as usize).collect();
        let mut order = members.clone();
        order.shuffle(&mut rng);
        let n = order.len();
        let mut cursor = 0usize;
        let mut channels = Vec::with_capacity(pop.channels_per_space as usize);
        for _ in 0..pop.channels_per_space {
            let want = pop.members.sample(&mut rng).round().max(2.0) as usize;
            let size = want.min(n);
            // Consecutive windows over a shuffled order: every space member lands in a
            // channel as soon as the channels' sizes add up to the space's size.
            let mut ch: Vec<u32> = (0..size).map(|k| order[(cursor + k) % n]).collect();
            cursor = (cursor + size) % n.max(1);
            ch.sort_unstable();
            channels.push(ch);
        }
        spaces.push(LayoutSpace { members, channels });
    }
    let pairs = ((pop.dm_share * f64::from(users)) / 2.0).round() as usize;
    let mut all: Vec<u32> = (0..users).collect();
    all.shuffle(&mut rng);
    let dms = all
        .chunks_exact(2)
        .take(pairs)
        .map(|c| (c[0].min(c[1]), c[0].max(c[1])))
        .collect();
    Layout {
        users,
        personas,
        spaces,
        dms,
    }
}

/// Index drawn with probability proportional to its weight.
pub(crate) fn pick_weighted<R: Rng + ?Sized>(
    rng: &mut R,
    weights: impl Iterator<Item = f64> + Clone,
) -> u32 {
    let total: f64 = weights.clone().sum();
    let mut x = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        last = i as u32;
        if x < w {
            return i as u32;
        }
        x -= w;
    }
    last
}

/// A provisioned user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanUser {
    /// Position in the plan (0-based); shards and nonces use it.
    pub index: u32,
    /// User id on the node.
    pub id: UserId,
    /// Session token for `hello`.
    pub token: String,
    /// Persona index in the scenario.
    pub persona: u32,
    /// Channels the user is a member of (space channels, then DMs).
    pub channels: Vec<ChannelId>,
}

/// A provisioned channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChannel {
    /// Channel id on the node.
    pub id: ChannelId,
    /// Whether it is a DM.
    pub dm: bool,
    /// Member user indices.
    pub members: Vec<u32>,
}

/// Users, channels and tokens of a run: what the workers read from `plan.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Scenario name.
    pub scenario: String,
    /// Seed the layout came from.
    pub seed: u64,
    /// Users in index order.
    pub users: Vec<PlanUser>,
    /// Channels.
    pub channels: Vec<PlanChannel>,
}

/// One worker's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Shard index, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Parse `I/N` (0-based I).
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || LoadgenError::Invalid(format!("shard {s:?}: expected I/N with 0 <= I < N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether user `index` belongs to this shard (round-robin, so every shard gets a
    /// similar mix and the schedule does not depend on the sharding).
    pub fn owns(&self, user: u32) -> bool {
        user as usize % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Plan {
    /// Combine a layout with the node's answer.
    pub fn from_provisioned(s: &Scenario, layout: &Layout, p: &Provisioned) -> Result<Plan> {
        let mismatch = |what: &str| {
            LoadgenError::Invalid(format!(
                "the provisioning answer has the wrong number of {what}"
            ))
        };
        if p.users.len() != layout.users as usize {
            return Err(mismatch("users"));
        }
        if p.spaces.len() != layout.spaces.len() || p.dms.len() != layout.dms.len() {
            return Err(mismatch("spaces or DMs"));
        }
        let mut users: Vec<PlanUser> = p
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| PlanUser {
                index: i as u32,
                id: u.id,
                token: u.token.clone(),
                persona: layout.personas[i],
                channels: Vec::new(),
            })
            .collect();
        let mut channels = Vec::new();
        for (ls, ps) in layout.spaces.iter().zip(&p.spaces) {
            if ps.channels.len() != ls.channels.len() {
                return Err(mismatch("channels"));
            }
            for (members, &id) in ls.channels.iter().zip(&ps.channels) {
                for &m in members {
                    users[m as usize].channels.push(id);
                }
                channels.push(PlanChannel {
                    id,
                    dm: false,
                    members: members.clone(),
                });
            }
        }
        for (&(a, b), &id) in layout.dms.iter().zip(&p.dms) {
            users[a as usize].channels.push(id);
            users[b as usize].channels.push(id);
            channels.push(PlanChannel {
                id,
                dm: true,
                members: vec![a, b],
            });
        }
        Ok(Plan {
            scenario: s.name.clone(),
            seed: s.seed,
            users,
            channels,
        })
    }

    /// The plan of a generic WebSocket target: users with their personas, no tokens, no
    /// channels (nothing to provision; rooms come from `[target]`).
    pub fn synthetic(s: &Scenario) -> Plan {
        let personas: Vec<u32> = (0..s.population.users).map(|u| persona_of(s, u)).collect();
        Plan {
            scenario: s.name.clone(),
            seed: s.seed,
            users: personas
                .into_iter()
                .enumerate()
                .map(|(i, persona)| PlanUser {
                    index: i as u32,
                    id: i as i64,
                    token: String::new(),
                    persona,
                    channels: Vec::new(),
                })
                .collect(),
            channels: Vec::new(),
        }
    }

    /// Workers needed so that none holds more than [`MAX_USERS_PER_WORKER`] users.
    pub fn workers_needed(&self) -> usize {
        self.users.len().div_ceil(MAX_USERS_PER_WORKER).max(1)
    }

    /// The `n` shards of this plan; an error if one would exceed the per-worker limit.
    pub fn shards(&self, n: usize) -> Result<Vec<Shard>> {
        if n == 0 || self.users.len().div_ceil(n) > MAX_USERS_PER_WORKER {
            return Err(LoadgenError::Invalid(format!(
                "{} users need at least {} workers (at most {MAX_USERS_PER_WORKER} each), got {n}",
                self.users.len(),
                self.workers_needed()
            )));
        }
        Ok((0..n).map(|index| Shard { index, count: n }).collect())
    }

    /// The users of one shard.
    pub fn shard_users(&self, shard: Shard) -> impl Iterator<Item = &PlanUser> {
        self.users.iter().filter(move |u| shard.owns(u.index))
    }

    /// Write as JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).map_err(|e| LoadgenError::json("plan", e))?;
        std::fs::write(path, text)
            .map_err(|e| LoadgenError::io(format!("writing {}", path.display()), e))
    }

    /// Read a plan written by [`Plan::write`].
    pub fn read(path: &Path) -> Result<Plan> {
        let text = std::fs::read(path)
            .map_err(|e| LoadgenError::io(format!("reading {}", path.display()), e))?;
        serde_json::from_slice(&text)
            .map_err(|e| LoadgenError::json(format!("parsing {}", path.display()), e))
    }
}

/// The admin request for a layout.
pub fn provision_request(layout: &Layout, username_prefix: &str) -> Provision {
    Provision {
        username_prefix: username_prefix.to_string(),
        users: layout.users,
        spaces: layout
            .spaces
            .iter()
            .enumerate()
            .map(|(i, s)| ProvisionSpace {
                name: format!("space{i}"),
                members: s.members.clone(),
                channels: s
                    .channels
                    .iter()
                    .enumerate()
                    .map(|(c, m)| ProvisionChannel {
                        name: format!("ch{c}"),
                        members: Some(m.clone()),
                    })
                    .collect(),
            })
            .collect(),
        dms: layout.dms.clone(),
    }
}

/// Build the layout and provision it through `POST {http_base}/api/v1/admin/provision`.
pub async fn provision(s: &Scenario, http_base: &str, admin_secret: &str) -> Result<Plan> {
    let layout = layout(s);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // A fresh prefix per run, so several runs can share one database.
    let prefix = format!("lg{}x", millis % 10_000_000_000);
    let body = provision_request(&layout, &prefix);
    let url = format!("{}/api/v1/admin/provision", http_base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let resp = client
        .post(&url)
        .header(ADMIN_HEADER, admin_secret)
        .json(&body)
        .send()
        .await
        .map_err(|e| LoadgenError::Provision {
            url: url.clone(),
            message: format!("{e}"),
        })?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(b) => format!("{status}: {:?}: {}", b.code, b.message),
            Err(_) => format!("{status}: {}", text.chars().take(300).collect::<String>()),
        };
        return Err(LoadgenError::Provision { url, message });
    }
    let answer: Provisioned = resp.json().await.map_err(|e| LoadgenError::Provision {
        url: url.clone(),
        message: format!("unreadable answer: {e}"),
    })?;
    Plan::from_provisioned(s, &layout, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowline_protocol::api::{ProvisionedSpace, ProvisionedUser};

    fn scenario(seed: u64, users: u32) -> Scenario {
        let text = format!(
            "[run]\nname = \"t\"\nduration = \"1s\"\nseed = {seed}\n[population]\nusers = {users}\nspaces = 4\nchannels_per_space = 3\nmembers = {{ dist = \"uniform\", min = 5, max = 40 }}\ndm_share = 0.2\n[[personas]]\nname = \"a\"\nweight = 3\n[[personas]]\nname = \"b\"\nweight = 1\n"
        );
        Scenario::parse("t", &text).unwrap()
    }

    #[test]
    fn same_seed_same_layout_other_seed_other_layout() {
        let a = layout(&scenario(9, 200));
        assert_eq!(a, layout(&scenario(9, 200)));
        assert_ne!(a, layout(&scenario(10, 200)));
        assert_eq!(a.spaces.len(), 4);
        assert_eq!(a.dms.len(), 20);
        let members: usize = a.spaces.iter().map(|s| s.members.len()).sum();
        assert_eq!(members, 200);
        for s in &a.spaces {
            for ch in &s.channels {
                assert!((2..=40).contains(&ch.len()));
                assert!(ch.iter().all(|m| s.members.contains(m)));
            }
        }
        let b_share = a.personas.iter().filter(|&&p| p == 1).count();
        assert!((20..=80).contains(&b_share), "{b_share}");
    }

    #[test]
    fn personas_do_not_depend_on_population_size() {
        // Per-user streams: user 5's persona is the same in a bigger population.
        let a = layout(&scenario(3, 50));
        let b = layout(&scenario(3, 500));
        assert_eq!(a.personas[..], b.personas[..50]);
    }

    #[test]
    fn plan_from_answer_and_shards() {
        let s = scenario(1, 40);
        let l = layout(&s);
        let mut next = 100;
        let mut id = || {
            next += 1;
            next
        };
        let answer = Provisioned {
            users: (0..40)
                .map(|i| ProvisionedUser {
                    id: 1000 + i,
                    token: format!("t{i}"),
                })
                .collect(),
            spaces: l
                .spaces
                .iter()
                .map(|sp| ProvisionedSpace {
                    id: id(),
                    channels: sp.channels.iter().map(|_| id()).collect(),
                })
                .collect(),
            dms: l.dms.iter().map(|_| id()).collect(),
        };
        let plan = Plan::from_provisioned(&s, &l, &answer).unwrap();
        assert_eq!(plan.users.len(), 40);
        assert_eq!(plan.channels.len(), 12 + l.dms.len());
        let (a, b) = l.dms[0];
        let dm = plan.channels.iter().find(|c| c.dm).unwrap();
        assert!(plan.users[a as usize].channels.contains(&dm.id));
        assert!(plan.users[b as usize].channels.contains(&dm.id));
        assert_eq!(plan.workers_needed(), 1);
        let shards = plan.shards(3).unwrap();
        let total: usize = shards.iter().map(|&sh| plan.shard_users(sh).count()).sum();
        assert_eq!(total, 40);
        assert!(plan.shards(0).is_err());
        let mut short = answer.clone();
        short.users.pop();
        assert!(Plan::from_provisioned(&s, &l, &short).is_err());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        plan.write(&p).unwrap();
        assert_eq!(Plan::read(&p).unwrap(), plan);
    }

    #[test]
    fn shard_parsing() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
