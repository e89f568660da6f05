import { testStore } from './store.conformance.ts';

// Runs against the real PostgreSQL that scripts/test.mjs found or started (TEST_DATABASE_URL).
testStore('postgres');
