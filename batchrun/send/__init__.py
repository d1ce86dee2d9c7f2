"""Send: the rows to do turned into paced requests and written answers.

Takes: the rows to do (``plan``), requests built by the task, the service client.
Gives: answered rows to the output (``writer``) through bounded queues (``scheduler``); each
request paced under the quota (``pacing``, ``teampacing`` across processes, ``inflight``),
retried or split (``sender``, ``retry``, ``rejections``), counted (``stats``) and shown
(``progress``).
"""
