//! Password hashing with Argon2id, on a few threads of its own.
//!
//! A hash is deliberately slow (tens of milliseconds) and needs 19 MiB of working
//! memory. Run on the async runtime it would stall every other request; run on the
//! blocking pool, each of its many threads would keep its own 19 MiB in the
//! allocator's per-thread arenas after a burst of sign-ups (1.5 GB was seen). So the
//! [`Hasher`] owns a small, fixed set of threads (`PASSWORD_HASHING_THREADS`, default
//! 2): each hashes into one block of memory that it reuses from job to job and frees
//! after a few idle seconds. Jobs wait in a bounded queue; memory stays at a few
//! blocks whatever the load.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use argon2::password_hash::phc::{Output, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use tokio::sync::{Semaphore, oneshot};

/// A thread frees its working memory after this long without a job.
const IDLE: Duration = Duration::from_secs(2);
/// Jobs waiting for a thread; more callers wait (asynchronously) for room.
const QUEUE: usize = 256;

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    jobs: Arc<Jobs>,
    room: Arc<Semaphore>,
    /// A hash, with the default parameters, of a random password nobody knows.
    /// Verifying against it when the email is unknown makes "unknown email" and
    /// "wrong password" take the same time, so timing does not reveal which emails
    /// have accounts.
    dummy: Arc<tokio::sync::OnceCell<String>>,
}

struct Job {
    work: Work,
    reply: oneshot::Sender<anyhow::Result<Answer>>,
}

enum Work {
    Hash(String),
    Verify { password: String, hash: String },
}

enum Answer {
    Hashed(String),
    Matches(bool),
}

impl Hasher {
    /// Starts `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let queue = Arc::new(Queue::default());
        for index in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&queue))
                .context("starting a password hashing thread")?;
        }
        Ok(Self {
            jobs: Arc::new(Jobs(queue)),
            room: Arc::new(Semaphore::new(QUEUE)),
            dummy: Arc::default(),
        })
    }

    /// Hashes a password into a PHC string (`$argon2id$...`) with a random salt.
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        match self.run(Work::Hash(password)).await? {
            Answer::Hashed(hash) => Ok(hash),
            Answer::Matches(_) => Err(anyhow!("the hashing thread answered a hash with a match")),
        }
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) it does the same
    /// work and answers false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> anyhow::Result<bool> {
        let known = hash.is_some();
        let hash = match hash {
            Some(hash) => hash,
            None => self.dummy().await?,
        };
        match self.run(Work::Verify { password, hash }).await? {
            Answer::Matches(matches) => Ok(known && matches),
            Answer::Hashed(_) => Err(anyhow!("the hashing thread answered a match with a hash")),
        }
    }

    async fn dummy(&self) -> anyhow::Result<String> {
        self.dummy
            .get_or_try_init(|| self.hash(uuid::Uuid::new_v4().to_string()))
            .await
            .cloned()
    }

    async fn run(&self, work: Work) -> anyhow::Result<Answer> {
        let _room = self.room.acquire().await.context("the hasher is closed")?;
        let (reply, answer) = oneshot::channel();
        self.jobs.0.push(Job { work, reply });
        answer.await.context("a password hashing thread failed")?
    }
}

/// The hashers' end of the queue: when the last clone of the [`Hasher`] is dropped,
/// the queue closes and the threads end.
struct Jobs(Arc<Queue>);

impl Drop for Jobs {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Jobs waiting for a hashing thread.
///
/// A lock and a condition variable rather than one channel receiver shared behind a
/// mutex: waiting on the condition releases the lock, so every idle thread runs its
/// own timeout and frees its own memory. (Behind a shared receiver, a thread that had
/// already freed its memory waited for the next job holding the lock, and the other
/// thread never timed out: its 19 MiB stayed until the next burst; CI caught it.)
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// What a hashing thread gets from [`Queue::next`].
enum Next {
    Job(Job),
    /// No job came within the thread's idle timeout.
    Idle,
    /// The [`Hasher`] is gone.
    Closed,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Poisoning cannot happen: nothing panics while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job) {
        self.lock().jobs.push_back(job);
        self.changed.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The next job, waiting for one at most `idle` if given (else for ever).
    fn next(&self, idle: Option<Duration>) -> Next {
        let deadline = idle.map(|idle| Instant::now() + idle);
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Next::Job(job);
            }
            if state.closed {
                return Next::Closed;
            }
            state = match deadline {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Next::Idle;
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

/// A hashing thread: takes jobs until the [`Hasher`] is dropped, and frees its
/// working memory after [`IDLE`] without one.
fn work(queue: &Queue) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        match queue.next((!memory.is_empty()).then_some(IDLE)) {
            Next::Job(Job { work, reply }) => {
                // The caller may have gone (a dropped request); nothing to tell then.
                let _ = reply.send(run(work, &mut memory));
            }
            Next::Idle => memory = Vec::new(),
            Next::Closed => return,
        }
    }
}

fn run(work: Work, memory: &mut Vec<Block>) -> anyhow::Result<Answer> {
    match work {
        Work::Hash(password) => hash(&password, memory).map(Answer::Hashed),
        Work::Verify { password, hash } => verify(&password, &hash, memory).map(Answer::Matches),
    }
}

/// Capacity reserved for the working memory: more than glibc's largest dynamic mmap
/// threshold (32 MiB on 64-bit). A 19 MiB block would be mmapped the first time, but
/// freeing it raises the threshold to 19 MiB, so every later block comes from the
/// heap and stays in the process once freed (seen: 54 MB after a second burst instead
/// of 15). Reserved beyond 32 MiB, the block is always mapped on its own and unmapped
/// when freed; only the pages a hash touches count towards RSS.
const RESERVED_BYTES: usize = 33 << 20;

/// Working memory for `params`, reusing (and if need be growing) `memory`.
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let count = params.block_count();
    if memory.len() < count {
        let reserve = count.max(RESERVED_BYTES / std::mem::size_of::<Block>());
        memory.reserve_exact(reserve.saturating_sub(memory.len()));
        memory.resize(count, Block::new());
    }
    &mut memory[..count]
}

fn hash(password: &str, memory: &mut Vec<Block>) -> anyhow::Result<String> {
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = Salt::generate();
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut output,
            blocks(memory, &params),
        )
        .map_err(|e| anyhow!("hashing a password: {e}"))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e| anyhow!("encoding the parameters: {e}"))?,
        salt: Some(salt),
        hash: Some(Output::new(&output).map_err(|e| anyhow!("encoding the hash: {e}"))?),
    };
    Ok(hash.to_string())
}

fn verify(password: &str, stored: &str, memory: &mut Vec<Block>) -> anyhow::Result<bool> {
    let parsed = PasswordHash::new(stored).map_err(|e| anyhow!("stored hash is not valid: {e}"))?;
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str())
        .map_err(|e| anyhow!("stored hash names an unknown algorithm: {e}"))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| anyhow!("stored hash names an unknown version: {e}"))?
        .unwrap_or_default();
    let params =
        Params::try_from(&parsed).map_err(|e| anyhow!("stored hash has bad parameters: {e}"))?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(anyhow!("stored hash lacks its salt or output"));
    };
    let mut output = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut output,
            blocks(memory, &params),
        )
        .map_err(|e| anyhow!("hashing a password: {e}"))?;
    // `Output` compares in constant time.
    Ok(Output::new(&output).map_err(|e| anyhow!("hash output: {e}"))? == expected)
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;

    use super::*;

    /// The defect CI caught: one thread waiting for work without a timeout (its memory
    /// already freed) must not keep another from timing out and freeing its own.
    #[test]
    fn every_idle_thread_times_out_while_another_waits_for_work() {
        let queue = Arc::new(Queue::default());
        let waiting = std::thread::spawn({
            let queue = Arc::clone(&queue);
            move || matches!(queue.next(None), Next::Closed)
        });
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        assert!(matches!(
            queue.next(Some(Duration::from_millis(100))),
            Next::Idle
        ));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        queue.close();
        assert!(waiting.join().unwrap(), "closing ends the waiting thread");
    }

    #[tokio::test]
    async fn dropping_the_last_hasher_ends_its_threads() {
        let hasher = Hasher::new(2).unwrap();
        let queue = Arc::downgrade(&hasher.jobs.0);
        drop(hasher.clone());
        assert!(
            hasher.hash("pw".into()).await.is_ok(),
            "a clone's drop closes nothing"
        );
        drop(hasher);
        let started = Instant::now();
        while queue.strong_count() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "threads still hold the queue"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let hasher = Hasher::new(2).unwrap();
        let first = hasher.hash("secret".into()).await.unwrap();
        let second = hasher.hash("secret".into()).await.unwrap();
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "each hash has its own salt");
        assert!(
            hasher
                .verify("secret".into(), Some(first.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("Secret".into(), Some(first)).await.unwrap());
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_are_standard_argon2id_both_ways() {
        let hasher = Hasher::new(1).unwrap();
        let ours = hasher.hash("pw".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        // A hash made by the crate's own API (as the previous version stored them).
        let theirs = argon2::PasswordHasher::hash_password(&Argon2::default(), b"pw")
            .unwrap()
            .to_string();
        assert!(hasher.verify("pw".into(), Some(theirs)).await.unwrap());
    }
}
