-- Chat features: message kinds, edits and tombstones, reactions, threads, attachments.

-- Threads are channels of kind 'thread', children of the channel holding their parent
-- message. Readability follows the parent channel (see CAN_READ in storage/postgres.rs).
ALTER TABLE channels DROP CONSTRAINT channels_kind_check;
ALTER TABLE channels ADD CONSTRAINT channels_kind_check
    CHECK (kind IN ('public', 'private', 'dm', 'thread'));
ALTER TABLE channels DROP CONSTRAINT channels_check;
ALTER TABLE channels ADD CONSTRAINT channels_space_check
    CHECK (kind = 'thread' OR ((kind = 'dm') = (space_id IS NULL)));
ALTER TABLE channels
    ADD COLUMN parent_id         BIGINT REFERENCES channels (id) ON DELETE CASCADE,
    -- The message the thread was started on: one thread per message.
    ADD COLUMN parent_message_id BIGINT UNIQUE,
    -- Unix ms of the latest message (a thread's "last reply"), set by the append.
    ADD COLUMN last_message_at   BIGINT;
ALTER TABLE channels ADD CONSTRAINT channels_thread_check
    CHECK ((kind = 'thread') = (parent_id IS NOT NULL AND parent_message_id IS NOT NULL));
CREATE INDEX channels_parent ON channels (parent_id) WHERE parent_id IS NOT NULL;

ALTER TABLE messages
    ADD COLUMN kind          TEXT NOT NULL DEFAULT 'text'
        CHECK (kind IN ('text', 'markdown', 'reply', 'quote', 'forward')),
    ADD COLUMN reply_to      BIGINT,
    ADD COLUMN quote_id      BIGINT,
    ADD COLUMN quote_excerpt TEXT,
    -- Origin of a forwarded message (copied: the origin may be edited or deleted later).
    ADD COLUMN fwd_channel   BIGINT,
    ADD COLUMN fwd_id        BIGINT,
    ADD COLUMN fwd_author    BIGINT,
    ADD COLUMN fwd_created   BIGINT,
    ADD COLUMN edited_at     BIGINT,
    -- Set once: the message is a tombstone (body emptied, seq kept).
    ADD COLUMN deleted_at    BIGINT;

-- One reaction per user per emoji per message: the primary key makes concurrent adds safe.
CREATE TABLE reactions (
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    emoji      TEXT NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Orders emojis by first use.
    ord        BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (message_id, emoji, user_id)
);

-- Uploaded files: content lives under the node's data dir as uploads/<sha256>.
CREATE TABLE attachments (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uploader_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE message_attachments (
    message_id    BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attachment_id BIGINT NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    position      INT NOT NULL,
    PRIMARY KEY (message_id, attachment_id)
);
CREATE INDEX message_attachments_attachment ON message_attachments (attachment_id);
