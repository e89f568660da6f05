import { testStore } from './store.conformance.ts';

testStore('sqlite');
