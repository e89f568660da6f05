import { testStore } from './store.conformance.ts';
import { mysqlAvailable } from './helpers/databases.ts';

// Runs against the MySQL/MariaDB server scripts/test.mjs found (TEST_MYSQL_URL). npm ships
// no such server: where none was found, npm test ends with one line saying this did not run
// (and REQUIRE_MYSQL=1, set by .ci/run, makes that a failure before any test starts).
if (mysqlAvailable()) testStore('mysql');
