import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseServerVersion, unsupportedServer } from '../src/store/mysql/connection.ts';

// What the MySQL store asks of the server it connects to (it reads VERSION() at open and
// refuses an older one in one line): MariaDB and MySQL differ in where SKIP LOCKED and
// JSON_TABLE arrived, and only MariaDB 10.11 runs on this machine, so the rule is checked
// here on the version strings each server reports.
describe('MySQL/MariaDB server versions', () => {
  it('tells MariaDB from MySQL by the version string each reports', () => {
    assert.deepEqual(parseServerVersion('10.11.19-MariaDB-0+deb12u1'), { product: 'MariaDB', major: 10, minor: 11, patch: 19, text: 'MariaDB 10.11.19' });
    assert.deepEqual(parseServerVersion('8.0.36'), { product: 'MySQL', major: 8, minor: 0, patch: 36, text: 'MySQL 8.0.36' });
    assert.equal(parseServerVersion('8.4.3-commercial').product, 'MySQL');
    // MariaDB 10.x behind a replication-compatible prefix, as some builds report it
    assert.equal(parseServerVersion('5.5.5-10.6.16-MariaDB').text, 'MariaDB 10.6.16');
  });

  it('takes MariaDB 10.6+ and MySQL 8.0.4+, and names what an older one lacks in one line', () => {
    for (const ok of ['10.6.0-MariaDB', '10.11.19-MariaDB-0+deb12u1', '11.4.2-MariaDB', '8.0.4', '8.0.36', '8.4.3', '9.1.0']) {
      assert.equal(unsupportedServer(parseServerVersion(ok)), null, ok);
    }
    assert.equal(unsupportedServer(parseServerVersion('10.5.23-MariaDB')), 'MariaDB 10.6 or later (FOR UPDATE SKIP LOCKED, JSON_TABLE)');
    assert.equal(unsupportedServer(parseServerVersion('8.0.3-rc')), 'MySQL 8.0.4 or later (FOR UPDATE SKIP LOCKED, JSON_TABLE)');
    assert.equal(unsupportedServer(parseServerVersion('5.7.44')), 'MySQL 8.0.4 or later (FOR UPDATE SKIP LOCKED, JSON_TABLE)');
  });
});
