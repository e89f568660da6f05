/** The operations on posts and channels: one module the CLI and an HTTP API call alike. */
export { OperationError, type OperationErrorKind } from './errors.ts';
export {
  cancelPosts,
  ContentError,
  editPost,
  listPosts,
  markPublished,
  retryPosts,
  schedulePost,
  showPost,
  DEFAULT_LIST,
  MAX_LIST,
  MAX_KEY,
  type EditInput,
  type ListInput,
  type OperationOptions,
  type PostDetails,
  type PostPage,
  type Refusal,
  type ScheduleInput,
  type Scheduled,
} from './posts.ts';
export { pauseChannel, removeChannel, resumeChannel, rotateWebhook } from './channels.ts';
export { statusObject, statusOf, type Status } from './status.ts';
