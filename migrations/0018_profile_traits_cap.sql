-- A profile's traits merge the traits of every identify (of every group call, for a group)
-- into one document, which a writer sending new keys each time could grow without end: every
-- merge reads the whole document, and an answer carries at most 6 MB. The consumer leaves a
-- profile's traits as they are when a call could take them past 256 KiB, and notes when here.
ALTER TABLE users ADD COLUMN traits_capped_at DATETIME(3) NULL;
ALTER TABLE group_profiles ADD COLUMN traits_capped_at DATETIME(3) NULL;
